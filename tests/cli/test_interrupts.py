"""SIGTERM (what Airflow sends) and SIGINT (Ctrl-C) at several points of `data generate`
and `train`: no temporary folder is left, no MLflow run stays RUNNING, nothing shared
changes."""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pipelines.data.generator import GeneratorConfig, generate_shop
from tests.shops import LIGHT_TOML

pytestmark = pytest.mark.slow
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def _start(args: list[str], home: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SHOPML_HOME": str(home), "COLUMNS": "200"}
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", *args], env=env, stdout=out, stderr=out
        )


def _interrupt_when(
    proc: subprocess.Popen[bytes], ready: Callable[[], bool], sig: int, timeout: float = 300
) -> bool:
    """Send ``sig`` once ``ready()``; False when the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(sig)
            proc.wait(timeout=120)
            return True
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the process never reached the point to interrupt")


def _leftovers(root: Path) -> list[str]:
    return sorted(
        str(p) for p in root.rglob("*") if ".tmp-" in p.name or p.name.startswith("shopml-train-")
    )


def _running_runs(home: Path) -> list[tuple[str, str]]:
    db = home / "mlflow" / "mlflow.db"
    if not db.is_file():
        return []
    # immutable: the probe takes no lock, so polling never makes MLflow's writes wait
    # ("database is locked"); a read racing a write may fail, and is tried again
    con = sqlite3.connect(f"file:{db}?immutable=1", uri=True)
    try:
        return con.execute("SELECT run_uuid, status FROM runs WHERE status = 'RUNNING'").fetchall()
    except sqlite3.DatabaseError:  # no tables yet, or a page caught mid-write
        return []
    finally:
        con.close()


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("after", [0.8, 2.0])
def test_generate_leaves_no_partial_snapshot(tmp_path: Path, sig: int, after: float) -> None:
    out = tmp_path / "snaps" / "big"
    proc = _start(["data", "generate", "--out", str(out), "--events", "3000000", "--users", "60000", "--items", "5000"], tmp_path / "home", tmp_path / "log")  # fmt: skip
    started = time.monotonic()
    if not _interrupt_when(proc, lambda: time.monotonic() - started > after, sig):
        pytest.skip("generation finished before the signal")
    assert proc.returncode != 0
    assert _leftovers(tmp_path) == [], (tmp_path / "log").read_text()
    assert not out.exists()


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("interrupts")
    generate_shop(GeneratorConfig(users=1_500, items=300, events=40_000, seed=11, days=45, judged_queries=5), out=root / "shop")  # fmt: skip
    (root / "light.toml").write_text(LIGHT_TOML)
    return root / "shop", root / "light.toml"


def _log_has(log: Path, text: str) -> Callable[[], bool]:
    return lambda: log.is_file() and text in log.read_text(errors="replace")


@pytest.mark.parametrize("sig", SIGNALS, ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("point", ["features", "candidates", "registration"])
def test_train_interrupted_leaves_nothing_behind(
    tmp_path: Path, shop: tuple[Path, Path], sig: int, point: str
) -> None:
    snapshot, config = shop
    home, log = tmp_path / "home", tmp_path / "log"
    proc = _start(["train", "--snapshot", str(snapshot), "--config", str(config)], home, log)
    ready = {
        "features": _log_has(log, "features at"),
        "candidates": _log_has(log, "fitted als"),
        "registration": lambda: bool(_running_runs(home)),  # the MLflow run is open
    }[point]
    assert _interrupt_when(proc, ready, sig), log.read_text()
    assert proc.returncode == 128 + sig, log.read_text()  # 143 for SIGTERM, 130 for SIGINT
    assert "Traceback" not in log.read_text()
    assert _leftovers(home) == [] and _leftovers(snapshot) == []
    assert _running_runs(home) == [], "an interrupted run is closed, not left RUNNING"
    assert not (home / "feature_store").exists(), "the shared feature store was not touched"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(130)])
def test_a_library_logging_the_interrupt_shows_the_line_without_the_traceback(
    exc: BaseException,
) -> None:
    import io

    from pipelines.cli.app import NoInterruptTracebacks

    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(NoInterruptTracebacks())
    logger = logging.getLogger("some.library.pool")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for error in (exc, RuntimeError("real failure")):
            try:
                raise error
            except BaseException:
                logger.error("Exception during reset", exc_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = out.getvalue()
    assert text.count("Exception during reset") == 2
    assert text.count("Traceback") == 1 and "RuntimeError: real failure" in text  # others kept


_SLOW_FINALIZER = """
import signal, sys, time
from pipelines.cli import _interrupt
signal.signal(signal.SIGTERM, _interrupt)
signal.signal(signal.SIGINT, _interrupt)

class Slow:
    def __del__(self):
        print("in __del__", flush=True)
        time.sleep(1.5)

obj = Slow()
del obj
print("after __del__", flush=True)
time.sleep(10)
print("not interrupted", flush=True)
"""


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, -signal.SIGINT)])
def test_an_interrupt_landing_in_a_finalizer_is_not_lost(
    tmp_path: Path, sig: int, code: int
) -> None:
    """Python drops an exception raised inside ``__del__``; the interrupt must still stop the
    command (CI saw a SIGTERM land in GitPython's Repo.__del__ and the model got registered)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_FINALIZER], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"in __del__\n"
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert b"after __del__" in out  # the finalizer itself was left to finish
    assert b"not interrupted" not in out, err.decode()
    assert proc.returncode == code, err.decode()  # -2: Python re-raises an uncaught Ctrl-C
