"""Importers that turn real shop data into contract snapshots (docs/data-import.md)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ImportResult:
    path: Path
    snapshot_id: str
    rows: dict[str, int]
    notes: tuple[str, ...] = ()
