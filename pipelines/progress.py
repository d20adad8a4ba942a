"""Progress for long work: a rich bar on a terminal, log lines with counts and rates otherwise."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger("shopml")


@contextmanager
def progress_reporter(
    description: str, unit: str, *, console: Console | None = None, every_s: float = 5.0
) -> Iterator[Callable[[int, int], None]]:
    """Yield ``update(done, total)``; render it as a bar (TTY) or as periodic log lines."""
    console = console or Console(stderr=True)
    started = time.perf_counter()
    if console.is_terminal:
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=None, rate="")

            def update(done: int, total: int) -> None:
                shown = rate_text(done, time.perf_counter() - started, unit)
                bar.update(task, completed=done, total=total, rate=shown)

            yield update
        return

    last = [0.0]

    def log_update(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every_s or done >= total:
            last[0] = now
            _log_rate(description, done, total, unit, now - started)

    yield log_update


def stage_progress(unit: str = "users", every_s: float = 5.0) -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` for work in several stages: a log line per stage
    every ``every_s`` seconds and at its end, with counts and the stage's rate."""
    started: dict[str, float] = {}
    last: dict[str, float] = {}

    def update(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        start = started.setdefault(stage, now)
        if now - last.get(stage, 0.0) >= every_s or done >= total:
            last[stage] = now
            _log_rate(stage, done, total, unit, now - start)

    return update


def rate_text(done: int, seconds: float, unit: str) -> str:
    """``"12,345 users/s"``; nothing until a second has passed (a rate over the first
    milliseconds says nothing: 500,000,000,000 users/s)."""
    if seconds < 1.0:
        return ""
    return f"{done / seconds:,.0f} {unit}/s"


def _log_rate(description: str, done: int, total: int, unit: str, seconds: float) -> None:
    rate = rate_text(done, seconds, unit)
    log.info(
        "%s: %s / %s %s%s",
        description,
        f"{done:,}",
        f"{total:,}",
        unit,
        f" ({rate})" if rate else "",
    )
