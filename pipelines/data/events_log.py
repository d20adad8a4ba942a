"""The serving events log: what the serving API showed, and what shoppers did with it.

The serving API appends JSON lines to its spool (``settings.serving_events_dir``), one
file per process, started anew every ``rotate`` (size or hour); ``shopml data import
events-log`` reads them into the next snapshot. Two kinds of line:

- ``served``: one answer — ``request_id``, ``endpoint`` (recommendations, search,
  similar), ``model`` and ``version``, ``user_id`` (None for an anonymous request),
  ``session_id``, ``query`` (search), ``items`` (ids in the order shown, from rank 1), ``ts``.
- ``event``: what the shop front end posted — ``type`` (impression, click, add_to_cart,
  purchase), ``user_id``, ``item_id``, ``request_id`` and ``position`` (of the answer
  that showed the item), ``session_id``, ``quantity``, ``value``, ``ts`` (when it
  happened, as the client says) and ``received_at``.

Both sides use this module, so the writer and the importer agree on one format.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

EVENT_KINDS = ("impression", "click", "add_to_cart", "purchase")
ENDPOINTS = ("recommendations", "search", "similar")
SERVED, EVENT = "served", "event"
FORMAT = 1


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def served_record(
    *,
    request_id: str,
    endpoint: str,
    model: str,
    version: int,
    items: list[str],
    user_id: str | None = None,
    session_id: str | None = None,
    query: str | None = None,
    ts: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": SERVED, "format": FORMAT, "request_id": request_id, "endpoint": endpoint,
        "model": model, "version": version, "user_id": user_id, "session_id": session_id,
        "query": query, "items": items, "ts": ts or now_iso(),
    }  # fmt: skip


def event_record(
    *,
    type: str,  # the field's name in the API and the log
    user_id: str,
    item_id: str,
    request_id: str | None,
    position: int | None,
    session_id: str | None,
    quantity: int | None,
    value: float | None,
    ts: str,
    key: str | None = None,
) -> dict[str, Any]:
    return {
        "kind": EVENT, "format": FORMAT, "type": type, "user_id": user_id, "item_id": item_id,
        "request_id": request_id, "position": position, "session_id": session_id,
        "quantity": quantity, "value": value, "ts": ts, "received_at": now_iso(), "key": key,
    }  # fmt: skip


@dataclass
class Spool:
    """Appends records to this process's current file in ``folder``; starts a new file
    past ``rotate_bytes`` or ``rotate_seconds``. Files are ``events-<UTC time>-<pid>.jsonl``:
    processes never share one.

    Every append is written and flushed at once (a reader sees it). ``durable=True`` (the
    default) returns only once the line is on disk: appends that arrive while an fsync runs
    share the next one (group commit), so a busy service pays one fsync per group, not per
    request. ``durable=False`` (the answers the service showed) does not wait: a background
    thread fsyncs them within ``sync_seconds``, and rotation and :meth:`close` fsync too."""

    folder: Path
    rotate_bytes: int = 64 * 1024 * 1024
    rotate_seconds: float = 3600.0
    sync_seconds: float = 1.0
    _fh: TextIO | None = field(default=None, init=False, repr=False)
    _opened: float = field(default=0.0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _sync_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _written: int = field(default=0, init=False, repr=False)  # appends written so far
    _synced: int = field(default=0, init=False, repr=False)  # appends known to be on disk
    _syncer: threading.Thread | None = field(default=None, init=False, repr=False)
    _closed: threading.Event = field(default_factory=threading.Event, init=False, repr=False)

    def append(self, records: list[dict[str, Any]], *, durable: bool = True) -> None:
        if not records:
            return
        data = "".join(
            json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n" for r in records
        )
        with self._lock:
            fh = self._file()
            fh.write(data)
            fh.flush()
            self._written += 1
            ticket = self._written
            if not durable and self._syncer is None:
                self._syncer = threading.Thread(
                    target=self._sync_loop, name="shopml-spool-sync", daemon=True
                )
                self._syncer.start()
        if durable:
            self._sync(ticket)

    def _sync(self, ticket: int) -> None:
        """Return once append ``ticket`` is on disk; one fsync covers every append written
        before it started."""
        with self._sync_lock:
            if self._synced >= ticket:  # an fsync that ran while we waited covered it
                return
            with self._lock:
                target = self._written
                fd = None if self._fh is None else os.dup(self._fh.fileno())
            if fd is not None:  # a duplicate: rotation may close the file meanwhile
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._synced = max(self._synced, target)

    def _sync_loop(self) -> None:
        while not self._closed.wait(self.sync_seconds):
            if self._synced < self._written:
                self._sync(self._written)

    def _file(self) -> TextIO:
        fh = self._fh
        if fh is not None and (
            fh.tell() >= self.rotate_bytes or time.monotonic() - self._opened >= self.rotate_seconds
        ):
            self._finish(fh)
            fh = None
        if fh is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
            path = self.folder / f"events-{stamp}-{os.getpid()}.jsonl"
            fh = path.open("a", encoding="utf-8")
            self._fh, self._opened = fh, time.monotonic()
        return fh

    def _finish(self, fh: TextIO) -> None:
        """fsync and close a file (under ``_lock``): everything written to it is on disk."""
        fh.flush()
        os.fsync(fh.fileno())
        fh.close()
        self._fh = None
        self._synced = self._written

    def rotate(self) -> None:
        """Finish the current file now and start the next one at once (so the finished
        file is no longer this process's newest: ``privacy forget`` may rewrite it)."""
        with self._lock:
            if self._fh is not None:
                self._finish(self._fh)
                self._file()

    @property
    def path(self) -> Path | None:
        return None if self._fh is None else Path(self._fh.name)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            if self._fh is not None:
                self._finish(self._fh)


@dataclass
class SpoolLines:
    """Every record of a spool folder, with where each came from."""

    served: list[dict[str, Any]]
    events: list[dict[str, Any]]
    files: int
    torn: list[str]  # files whose last line was cut (a crash while writing): skipped


def read_spool(folder: Path) -> SpoolLines:
    """The records of every ``events-*.jsonl`` in ``folder``. A last line without its
    newline (cut by a crash) is skipped and named in ``torn``; any other line that is not
    a record raises ValueError naming the file and line."""
    served: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    torn: list[str] = []
    files = sorted(folder.glob("events-*.jsonl"))
    for path in files:
        text = path.read_text(encoding="utf-8")
        lines = text.split("\n")
        if lines and lines[-1]:
            torn.append(path.name)
        for n, line in enumerate(lines[:-1], start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from exc
            kind = rec.get("kind") if isinstance(rec, dict) else None
            if kind == SERVED:
                served.append(rec)
            elif kind == EVENT:
                events.append({**rec, "_where": f"{path.name}, line {n}"})
            else:
                raise ValueError(f"{path}, line {n}: kind {kind!r} is neither served nor event")
    return SpoolLines(served, events, len(files), torn)
