"""What ``shopml serve`` runs: uvicorn over :func:`create`, one app per worker process.

Each worker reads the settings from the environment (as every ShopML process does),
logs one JSON line per request to stderr, and writes its metrics to the shared
``PROMETHEUS_MULTIPROC_DIR`` when there are several workers.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.settings import Settings, load_settings

if TYPE_CHECKING:
    from fastapi import FastAPI


def create() -> FastAPI:
    """The app of one worker (uvicorn's factory)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    for name in ("shopml.serving", "shopml.serving.access"):
        logger = logging.getLogger(name)
        logger.handlers = [handler]
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # imported here: prometheus_client picks its mode from the environment on import,
    # after run() has set it
    from serving.app import create_app

    return create_app(load_settings())


def run(settings: Settings, *, host: str, port: int, workers: int) -> None:
    import uvicorn

    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if workers > 1:
        metrics = settings.home / "serving" / "metrics"
        shutil.rmtree(metrics, ignore_errors=True)  # counters of an earlier run must not add up
        metrics.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    uvicorn.run(
        "serving.main:create", factory=True, host=host, port=port, workers=workers,
        access_log=False, log_level="warning", timeout_graceful_shutdown=10,
    )  # fmt: skip


def urls(host: str, port: int) -> dict[str, str]:
    base = f"http://{host}:{port}"
    return {"api": base, "docs": f"{base}/docs", "preview": f"{base}/preview"}


def key_files(settings: Settings) -> dict[str, Path]:
    folder = settings.serving_keys_file.parent
    return {s: folder / f"serving-{s}.key" for s in ("client", "admin")}
