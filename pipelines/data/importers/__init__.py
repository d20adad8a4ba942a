"""Importers that turn real shop data into contract snapshots (docs/data-import.md)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("shopml.import")


@dataclass(frozen=True)
class ImportResult:
    path: Path
    snapshot_id: str
    rows: dict[str, int]
    notes: tuple[str, ...] = ()


def log_table(table: str, file: str, rows: int, seconds: float) -> None:
    """One progress line per imported table: rows and rate."""
    rate = rows / max(seconds, 1e-9)
    log.info(
        "%s: %s rows from %s in %.1f s (%s rows/s)",
        table,
        f"{rows:,}",
        file,
        seconds,
        f"{rate:,.0f}",
    )
