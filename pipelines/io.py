"""Replacing a folder as a whole: readers see the old folder or the new one, never a mix."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path


def swap_in(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target``.

    An existing ``target`` is moved aside first and deleted only after ``new`` is in
    place; if renaming ``new`` fails, the old folder is put back.
    """
    if not target.exists():
        new.rename(target)
        return
    old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)
