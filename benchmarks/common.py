"""Shared helpers of the benchmark scripts: machine description, measured child runs, results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.evaluation.benchmark import (
    machine,  # one description of the machine for every result
)

RESULTS = Path(__file__).parent / "results"

# Appended to every child script: report wall time and peak memory of the child itself.
_REPORT = """
import json as _json, resource as _resource
_out = dict(result)
_out["peak_rss_gb"] = _resource.getrusage(_resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(_json.dumps(_out, default=str))
"""


def run_child(script: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script`` (which must set a dict ``result``) in a fresh Python; return it with peak RSS."""
    proc = subprocess.run(
        [sys.executable, "-c", script + _REPORT],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise SystemExit(f"benchmark step failed:\n{proc.stderr[-4000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def write_result(name: str, command: str, payload: dict[str, Any], out: Path | None = None) -> Path:
    path = out or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "command": command,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path
