"""The promotion ledger: append-only, one object per entry, hash-chained.

Entry ``n`` of a model is the key ``<model>/ledger/<n:08d>.json`` (canonical JSON, one
line). Every entry carries ``seq`` (its number, from 1), ``prev_sha256`` (the sha256 of
entry ``n - 1``'s bytes; None for the first) and the ``manifest_sha256`` of the version it
serves (a ``promote`` or ``rollback``) or rewrote (an ``erase``: docs/privacy.md). ``current.json`` names the head (the last entry's sha256), so editing, truncating
or deleting an entry breaks the chain or the pointer, and :func:`read_ledger` or
:mod:`pipelines.promotion.verify` says which key.

Appending creates the next key with :meth:`~pipelines.promotion.bucket.Bucket.put_if_absent`:
two writers racing for one number cannot both win; the loser re-reads the ledger and
takes the next number, so no entry is ever lost or overwritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import dumps, sha256_bytes
from pipelines.promotion.bucket import Bucket
from pipelines.promotion.layout import json_object

# Every key an entry may carry (docs/operations.md describes each).
LEDGER_FIELDS = (
    "seq", "prev_sha256", "action", "model", "version", "previous_version", "approved_by",
    "approved_at", "requested_by", "comment", "reason", "time", "verdict_sha256",
    "report_sha256", "manifest_sha256", "snapshot_id", "dag_run", "source",
)  # fmt: skip
_ENTRY = re.compile(r"^(\d{8})\.json$")
_MAX_RACES = 20


class LedgerError(ShopMLError):
    """The ledger is damaged: an entry is missing, unreadable, edited or out of order."""


@dataclass(frozen=True)
class Entry:
    key: str
    body: dict[str, Any]
    sha256: str  # of the stored bytes

    @property
    def seq(self) -> int:
        return int(self.body["seq"])

    @property
    def version(self) -> int:
        return int(self.body["version"])


@dataclass(frozen=True)
class Chain:
    """One hash-chained, append-only record in the bucket: its folder, the keys an entry
    may carry and those it must (the promotion ledger of a model; the erasure ledger)."""

    folder: str
    fields: tuple[str, ...]
    required: tuple[str, ...]

    def key(self, seq: int) -> str:
        return f"{self.folder}/{seq:08d}.json"


def chain(model: str) -> Chain:
    """The promotion ledger of ``model``."""
    return Chain(folder(model), LEDGER_FIELDS, ("seq", "action", "version", "prev_sha256"))


def folder(model: str) -> str:
    return f"{model}/ledger"


def entry_key(model: str, seq: int) -> str:
    return chain(model).key(seq)


def encode(body: dict[str, Any]) -> bytes:
    return dumps(body, sort_keys=True, indent=None).encode() + b"\n"


def read_ledger(bucket: Bucket, model: str) -> list[Entry]:
    """Every entry, oldest first, after checking the chain; raises :class:`LedgerError`
    naming the first key that is missing, unreadable, edited or out of order."""
    return read_chain(bucket, chain(model))


def read_chain(bucket: Bucket, spec: Chain, *, after: list[Entry] | None = None) -> list[Entry]:
    """:func:`read_ledger` for any chain. ``after``: entries already read and checked (a
    reader that polls reads only the new ones; the old ones must still be there)."""
    keys = bucket.keys(spec.folder)
    numbered: dict[int, str] = {}
    for key in keys:
        m = _ENTRY.match(key.rsplit("/", 1)[-1])
        if m is None:
            raise LedgerError(f"{bucket.url(key)}: not a ledger entry (expected NNNNNNNN.json)")
        numbered[int(m.group(1))] = key
    entries: list[Entry] = list(after or [])
    for expected, seq in enumerate(sorted(numbered), start=1):
        key = numbered[seq]
        if seq != expected:
            raise LedgerError(
                f"{bucket.url(spec.key(expected))}: ledger entry {expected} is missing "
                f"(the next one is {seq}); the ledger was edited or an entry deleted"
            )
        if expected <= len(entries):
            continue  # checked before
        raw = bucket.get(key)
        if raw is None:
            raise LedgerError(f"{bucket.url(key)}: ledger entry vanished while reading")
        entries.append(_parse(bucket, spec, key, raw, expected, entries[-1] if entries else None))
    if len(entries) > len(numbered):
        raise LedgerError(
            f"{bucket.url(spec.folder)}: {len(entries) - len(numbered)} entries read before are "
            "gone; the ledger was truncated"
        )
    return entries


def _parse(
    bucket: Bucket, spec: Chain, key: str, raw: bytes, seq: int, before: Entry | None
) -> Entry:
    where = bucket.url(key)
    body = json_object(bucket, key, raw, LedgerError) or {}
    unknown = sorted(set(body) - set(spec.fields))
    missing = [k for k in spec.required if k not in body]
    if unknown or missing:
        raise LedgerError(f"{where}: unknown fields {unknown} / missing fields {missing}")
    if body["seq"] != seq:
        raise LedgerError(f"{where}: says it is entry {body['seq']!r}, stored as entry {seq}")
    if "version" in spec.required and (
        not isinstance(body["version"], int) or isinstance(body["version"], bool)
    ):
        raise LedgerError(f"{where}: version {body['version']!r} is not a number")
    expected_prev = None if before is None else before.sha256
    if body["prev_sha256"] != expected_prev:
        raise LedgerError(
            f"{where}: prev_sha256 {str(body['prev_sha256'])[:12]}… does not match entry "
            f"{seq - 1}'s sha256 {str(expected_prev)[:12]}…: an earlier entry was edited"
        )
    if encode(body) != raw:
        raise LedgerError(f"{where}: not in the canonical form the ledger writes (edited)")
    return Entry(key, body, sha256_bytes(raw))


def append(
    bucket: Bucket,
    model: str,
    body: dict[str, Any],
    *,
    precondition: Callable[[list[Entry]], None] | None = None,
) -> Entry:
    """Add ``body`` as the next entry (``seq`` and ``prev_sha256`` filled in), retrying
    when a concurrent writer took the number; returns the entry written.
    ``precondition`` sees the entries the new one will follow, at every try, and raises
    to refuse: with the exclusive create, what it checked is exactly what precedes it."""
    return append_chain(bucket, chain(model), body, precondition=precondition)


def append_chain(
    bucket: Bucket,
    spec: Chain,
    body: dict[str, Any],
    *,
    precondition: Callable[[list[Entry]], None] | None = None,
) -> Entry:
    """:func:`append` for any chain."""
    unknown = sorted(set(body) - set(spec.fields))
    if unknown:
        raise LedgerError(f"{bucket.url(spec.folder)}: an entry may not carry {unknown}")
    entries: list[Entry] = []
    for _ in range(_MAX_RACES):
        entries = read_chain(bucket, spec, after=entries)
        if precondition is not None:
            precondition(entries)
        head = entries[-1] if entries else None
        full = {
            **body,
            "seq": len(entries) + 1,
            "prev_sha256": None if head is None else head.sha256,
        }
        raw = encode(full)
        key = spec.key(full["seq"])
        if bucket.put_if_absent(key, raw):
            return Entry(key, full, sha256_bytes(raw))
    raise LedgerError(f"{bucket.url(spec.folder)}: lost {_MAX_RACES} races to append; retry")
