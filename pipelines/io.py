"""The plumbing every stage shares: atomic writes, JSON files, hashing, staging folders.

- :func:`atomic_path`, :func:`write_bytes` / :func:`write_text` / :func:`write_json`: a
  file appears whole or not at all (written to a temporary name beside it, renamed into
  place);
- :func:`staging_folder` + :func:`swap_in` / :func:`publish`: a folder is built under a
  hidden temporary name and put in place in one rename; readers see the old folder or the
  new one, never a mix, and a failed build leaves nothing behind;
- :func:`jsonable`: numpy scalars, timestamps and non-finite floats made JSON-ready;
- :func:`sha256_file`, :func:`sha256_bytes`, :func:`sha256_json`: the digests manifests
  record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import ShopMLError


def resolved(path: str | Path) -> Path:
    """``path`` made absolute with symbolic links resolved; a link that loops back on
    itself is a :class:`~pipelines.errors.ShopMLError` naming it, not a RuntimeError."""
    try:
        return Path(path).expanduser().resolve()
    except RuntimeError as exc:  # Python raises RuntimeError for a symlink loop
        raise ShopMLError(f"{path}: a symbolic link that loops back on itself ({exc})") from exc


def why_not_a_file(path: str | Path) -> str | None:
    """None when ``path`` is a readable regular file, else what it is instead: "does not
    exist", "is a folder, not a file", "is a symbolic link that loops back on itself", ..."""
    p = Path(path)
    try:
        if p.is_file():
            return None
        if p.is_dir():
            return "is a folder, not a file"
        if p.is_symlink():
            p.resolve(strict=True)  # raises for a loop or a dangling link
        return "does not exist"
    except RuntimeError:
        return "is a symbolic link that loops back on itself"
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return "is a symbolic link that loops back on itself"
        return f"cannot be read ({exc.strerror or exc})"


def temporary_name(path: Path, kind: str = "tmp") -> Path:
    """A hidden, unique name beside ``path`` (``.name.tmp-1a2b3c4d``)."""
    return path.parent / f".{path.name}.{kind}-{uuid.uuid4().hex[:8]}"


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path to write ``path``'s new content to (by any writer: pandas,
    pyarrow, ...); renamed over ``path`` when the block ends, removed when it raises."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(target)
    try:
        yield tmp
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically and durably (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def refuse_shared(path: Path, holds: str) -> None:
    """Refuse ``path`` (which holds ``holds``: passwords, keys) when users other than its
    owner may read it."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ShopMLError(
            f"{path} holds {holds} but is mode {mode:o}; only its owner may read it "
            f"(chmod 600 {path})"
        )


def write_private(path: Path, text: str) -> None:
    """``text`` into ``path`` atomically, mode 0600 from the moment the file exists (a
    temporary file created 0600, then renamed): for passwords and keys."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = temporary_name(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def dumps(payload: Any, *, sort_keys: bool = False, indent: int | None = 2) -> str:
    """JSON text of ``payload`` (values made JSON-ready by :func:`jsonable`), one line
    when ``indent`` is None, else pretty with a final newline."""
    text = json.dumps(payload, indent=indent, sort_keys=sort_keys, default=jsonable)
    return text if indent is None else text + "\n"


def write_json(path: str | Path, payload: Any, *, sort_keys: bool = False) -> None:
    """``payload`` as indented JSON at ``path``, atomically."""
    write_text(path, dumps(payload, sort_keys=sort_keys))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())


def jsonable(value: Any) -> Any:
    """A JSON-ready stand-in for a value ``json`` cannot write itself: numpy scalars and
    arrays become numbers and lists, timestamps ISO 8601 text, NaN and infinities None,
    paths and anything else their text."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int | str | bool) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [jsonable(v) for v in value.tolist()]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "isoformat"):  # pandas Timestamp
        return value.isoformat()
    return str(value)


def finite_or_none(values: dict[str, dict[str, float]]) -> dict[str, dict[str, float | None]]:
    """A table of metric values with NaN and infinities as None (JSON has no NaN)."""
    return {
        s: {m: (v if math.isfinite(v) else None) for m, v in row.items()}
        for s, row in values.items()
    }


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(payload: Any) -> str:
    """The digest of ``payload``'s canonical JSON (sorted keys, no spaces after indent)."""
    return sha256_bytes(json.dumps(payload, sort_keys=True, default=jsonable).encode())


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock between processes on this machine (``flock`` on ``path``, created
    0600): for first-time initialisations that must not run twice at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def folder_digest(folder: Path) -> str:
    """One sha256 over every file under ``folder``: their relative paths and contents."""
    listing = {
        f.relative_to(folder).as_posix(): sha256_file(f)
        for f in sorted(folder.rglob("*"))
        if f.is_file()
    }
    return sha256_json(listing)


@contextmanager
def staging_folder(target: Path, *, kind: str = "tmp") -> Iterator[Path]:
    """A fresh hidden folder beside ``target`` to build into; removed when the block
    raises, or when it ends without the folder having been published."""
    tmp = temporary_name(target, kind)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def swap_in(new: Path, target: Path) -> None:
    """Put the complete folder ``new`` at ``target``.

    An existing ``target`` is moved aside first and deleted only after ``new`` is in
    place; if renaming ``new`` fails, the old folder is put back.
    """
    if not target.exists():
        new.rename(target)
        return
    old = temporary_name(target, "old")
    target.rename(old)
    try:
        new.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def publish(new: Path, target: Path, *, exists: Callable[[], bool]) -> bool:
    """Rename ``new`` to ``target`` unless another writer published first: returns False
    (and leaves ``new`` for the caller's clean-up) when ``target`` appeared and
    ``exists()`` says it is complete; raises the rename's error otherwise."""
    try:
        new.rename(target)
    except OSError:
        if not exists():
            raise
        return False
    return True


@contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` set in ``os.environ`` inside the block; afterwards each variable is back
    to what it was (removed when it was not set)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
