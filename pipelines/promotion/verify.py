"""Checking a model's part of the serving bucket before anyone acts on it.

:func:`verify_model` checks the ledger's chain, that ``current.json`` names the ledger's
head and the version it serves, and the promoted versions' files against their manifests
and each manifest against the digest the ledger recorded when it was promoted. Every
problem names the key that fails. ``shopml promotions verify`` prints them; promotion and
rollback refuse to act while any is found (serving will, too); an interrupted promotion is
the one state a rerun of that promotion may finish.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import sha256_json
from pipelines.promotion import layout
from pipelines.promotion.bucket import Bucket
from pipelines.promotion.ledger import Entry, LedgerError, read_ledger

DAMAGED = "damaged"
UNFINISHED = "unfinished"  # the ledger has the entry, the pointer does not follow it yet
ERASE = "erase"  # a ledger action: a version's files rewritten without erased shoppers


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str


@dataclass
class Verification:
    model: str
    entries: list[Entry] = field(default_factory=list)
    pointer: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    checked_versions: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == DAMAGED]

    @property
    def head(self) -> Entry | None:
        return self.entries[-1] if self.entries else None

    def require_intact(self, action: str) -> None:
        """Raise unless nothing is damaged (an unfinished promotion is left to ``action``)."""
        if self.damaged:
            more = f" (and {len(self.damaged) - 1} more)" if len(self.damaged) > 1 else ""
            raise ShopMLError(
                f"{action} refused: {self.damaged[0].message}{more}; nothing was changed. "
                "See `shopml promotions verify`"
            )

    def _add(self, message: str, kind: str = DAMAGED) -> None:
        self.problems.append(Problem(kind, message))


def verify_model(
    bucket: Bucket, model: str, *, versions: Iterable[int] | None = None, pending: int | None = None
) -> Verification:
    """Check ``model``'s ledger, pointer, every recorded version's manifest against the
    digest the ledger recorded, and the files of ``versions`` and of the served version
    (None: every version's files, and no complete version outside the ledger). ``pending``
    is a version being promoted right now: its manifest may precede its ledger entry."""
    out = Verification(model)
    try:
        out.entries = read_ledger(bucket, model)
    except LedgerError as exc:
        out._add(str(exc))
    try:
        out.pointer = layout.read_pointer(bucket, model)
    except layout.LayoutError as exc:
        out._add(str(exc))
    ledger_broken = bool(out.problems)
    _check_pointer(bucket, model, out, ledger_broken)
    recorded = latest_manifests(out.entries)
    files_of = set(recorded) if versions is None else set(versions)
    if out.pointer is not None:
        files_of.add(int(out.pointer["version"]))
    for version in sorted(set(recorded) | files_of):
        if version == pending and version not in recorded:
            continue  # being promoted: its upload is checked (or redone) by the promotion
        if version in files_of:
            out.checked_versions.append(version)
            manifest, problems = layout.version_problems(bucket, model, version)
            for message in problems:
                out._add(message)
        else:
            try:
                manifest = layout.read_manifest(bucket, model, version)
            except layout.LayoutError as exc:
                out._add(str(exc))
                continue
            if manifest is None:
                out._add(
                    f"{bucket.url(layout.version_key(model, version, layout.MANIFEST))}: missing"
                )
        digest = recorded.get(version)
        if manifest is not None and digest is not None and sha256_json(manifest) != digest:
            out._add(
                f"{bucket.url(layout.version_key(model, version, layout.MANIFEST))}: differs from "
                "the manifest the ledger recorded at promotion (re-hashed or replaced)"
            )
    if versions is None and not ledger_broken:
        for version in _manifested_versions(bucket, model):
            if version not in recorded and version != pending:
                out._add(
                    f"{bucket.url(layout.version_key(model, version, layout.MANIFEST))}: a "
                    "complete version the ledger never recorded (ledger entries lost, or a "
                    "promotion interrupted before its entry: rerun it)"
                )
    return out


def _check_pointer(bucket: Bucket, model: str, out: Verification, ledger_broken: bool) -> None:
    pointer, entries = out.pointer, out.entries
    where = bucket.url(layout.pointer_key(model))
    if ledger_broken:
        return
    if pointer is None:
        if entries:
            out._add(f"{where}: missing while the ledger holds {len(entries)} entries")
        return
    if not entries:
        out._add(
            f"{bucket.url(model + '/ledger')}: empty or deleted while {where} serves version "
            f"{pointer['version']}"
        )
        return
    head = entries[-1]
    if (pointer["ledger_seq"], pointer["ledger_head"]) != (head.seq, head.sha256):
        before = entries[-2] if len(entries) > 1 else None
        if before is not None and (pointer["ledger_seq"], pointer["ledger_head"]) == (
            before.seq,
            before.sha256,
        ):
            hint = (
                " (the next promotion, rollback or `shopml privacy forget` finishes it)"
                if head.body["action"] == ERASE
                else ""
            )
            out._add(
                f"{where}: the {head.body['action']} of version {head.version} (ledger entry "
                f"{head.seq}) did not finish; it still serves version {pointer['version']}{hint}",
                UNFINISHED,
            )
        else:
            out._add(
                f"{where}: names ledger entry {pointer['ledger_seq']} "
                f"({str(pointer['ledger_head'])[:12]}…), but the ledger's head is entry "
                f"{head.seq} ({head.sha256[:12]}…)"
            )
        return
    serving = served_entry(entries)
    if serving is None:
        out._add(f"{bucket.url(model + '/ledger')}: erasures recorded before any promotion")
        return
    if pointer["version"] != serving.version:
        out._add(
            f"{where}: serves version {pointer['version']}, the ledger serves version "
            f"{serving.version} (entry {serving.seq})"
        )
        return
    digest = latest_manifests(entries).get(serving.version)
    if pointer["manifest_sha256"] != digest:
        out._add(f"{where}: its manifest sha256 is not the one the ledger recorded")


def served_entry(entries: list[Entry]) -> Entry | None:
    """The entry that made the served version current: the last promotion or rollback
    (an erasure rewrites a version's files, it serves nothing)."""
    return next((e for e in reversed(entries) if e.body["action"] != ERASE), None)


def latest_manifests(entries: list[Entry]) -> dict[int, Any]:
    """Each version's manifest digest as the ledger last recorded it (an erasure records
    the rewritten manifest)."""
    return {e.version: e.body.get("manifest_sha256") for e in entries}


def _manifested_versions(bucket: Bucket, model: str) -> list[int]:
    found = set()
    for key in bucket.keys(f"{model}/versions"):
        parts = key.split("/")
        if len(parts) == 4 and parts[3] == layout.MANIFEST and parts[2].isdigit():
            found.add(int(parts[2]))
    return sorted(found)
