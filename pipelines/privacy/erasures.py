"""The erasure ledger: who asked to forget whom, when, why, and what was removed.

It lives in the serving bucket under ``privacy/erasures/NNNNNNNN.json``, hash-chained and
append-only like the promotion ledger (:mod:`pipelines.promotion.ledger`): editing,
truncating or deleting an entry breaks the chain. It never holds an erased shopper's id or
data — only :func:`~pipelines.data.privacy.erasure_hash` values (keyed hashes of the stored
ids) and counts.

A ``forget`` writes two entries: ``requested`` first (the hashes, who, why), which puts the
shoppers on the erasure list at once — the serving API reloads the list like a model and
every import drops their rows — then ``completed`` (the stores touched and the rows removed
from each, ``request``: the seq of the request it completes). A request without a
completion is a forget that was interrupted: run it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pipelines.promotion.bucket import Bucket
from pipelines.promotion.ledger import Chain, Entry, append_chain, read_chain

ERASURES = Chain(
    "privacy/erasures",
    fields=(
        "seq", "prev_sha256", "action", "time", "requested_by", "reason", "users", "stores",
        "request",
    ),
    required=("seq", "prev_sha256", "action", "time", "users"),
)  # fmt: skip
REQUESTED, COMPLETED = "requested", "completed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def request(bucket: Bucket, hashes: list[str], *, reason: str, requested_by: str) -> Entry:
    """Put the shoppers with these erasure hashes on the erasure list (first entry of a forget)."""
    body = {
        "action": REQUESTED,
        "time": _now(),
        "requested_by": requested_by,
        "reason": reason,
        "users": sorted(set(hashes)),
    }
    return append_chain(bucket, ERASURES, body)


def complete(
    bucket: Bucket, requested: Entry, stores: dict[str, int], *, requested_by: str
) -> Entry:
    """Record what a forget removed: per store, how many rows (or files, keys)."""
    body = {
        "action": COMPLETED,
        "time": _now(),
        "requested_by": requested_by,
        "users": requested.body["users"],
        "request": requested.seq,
        "stores": dict(sorted(stores.items())),
    }
    return append_chain(bucket, ERASURES, body)


def read(bucket: Bucket, after: list[Entry] | None = None) -> list[Entry]:
    return read_chain(bucket, ERASURES, after=after)


def erased_hashes(entries: list[Entry]) -> frozenset[str]:
    """Every shopper ever put on the erasure list."""
    return frozenset(h for e in entries for h in e.body.get("users", []))


def unfinished(entries: list[Entry]) -> list[Entry]:
    """Requests no completion closes (an interrupted forget)."""
    done = {e.body.get("request") for e in entries if e.body["action"] == COMPLETED}
    return [e for e in entries if e.body["action"] == REQUESTED and e.seq not in done]


@dataclass
class ErasureList:
    """The erasure list as a reader that polls sees it: :meth:`refresh` reads only the
    entries added since (the chain of those is checked), :meth:`__contains__` asks for a hash."""

    bucket: Bucket
    entries: list[Entry] = field(default_factory=list)
    hashes: frozenset[str] = frozenset()

    def refresh(self) -> bool:
        """Read new entries; True when the list changed."""
        before = len(self.entries)
        self.entries = read(self.bucket, after=self.entries)
        if len(self.entries) == before:
            return False
        self.hashes = erased_hashes(self.entries)
        return True

    def __contains__(self, digest: object) -> bool:
        return digest in self.hashes

    def status(self) -> dict[str, Any]:
        return {
            "erased_shoppers": len(self.hashes),
            "entries": len(self.entries),
            "unfinished": [e.seq for e in unfinished(self.entries)],
        }
