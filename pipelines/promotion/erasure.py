"""The bucket side of rewriting a promoted version without erased shoppers: staging, the
ledger's ``erase`` entry, and finishing it (docs/privacy.md).

:mod:`pipelines.privacy.bundles` builds the rewritten files; this module puts them in
place through the ledger, so that promotion, rollback and a later ``forget`` can all finish
an erasure that was interrupted after its entry. Staging lives under
``<model>/erasing/<version>/<digest>/``, named by the new manifest's digest (which the
ledger entry records), so two erasures never share a staging folder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import sha256_bytes, sha256_json
from pipelines.promotion import layout, ledger
from pipelines.promotion.bucket import Bucket
from pipelines.promotion.verify import ERASE, latest_manifests, served_entry

STAGING = "erasing"


def staging_prefix(model: str, version: int, digest: str) -> str:
    return f"{model}/{STAGING}/{version}/{digest[:16]}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def unchanged_since(version: int, digest: str, what: str) -> Callable[[list[ledger.Entry]], None]:
    """A ledger precondition: ``version``'s recorded manifest is still ``digest`` (no
    erasure rewrote it since it was read)."""

    def check(entries: list[ledger.Entry]) -> None:
        recorded = latest_manifests(entries).get(version)
        if recorded is not None and recorded != digest:
            raise ShopMLError(
                f"version {version} was rewritten (an erasure) while {what}; nothing was "
                "changed: run it again"
            )

    return check


def record(
    bucket: Bucket,
    model: str,
    version: int,
    old: dict[str, Any],
    files: dict[str, bytes],
    manifest: bytes,
    *,
    requested_by: str,
    reason: str,
) -> ledger.Entry:
    """Stage ``files`` (the changed ones, by relative path) and ``manifest``, then append
    the ``erase`` entry, provided no other writer rewrote the version since ``old`` was
    read; then put everything in place (:func:`finish`)."""
    body = json.loads(manifest)
    digest = sha256_json(body)
    prefix = staging_prefix(model, version, digest)
    for rel, data in sorted(files.items()):
        bucket.put(f"{prefix}/{rel}", data)
    bucket.put(f"{prefix}/{layout.MANIFEST}", manifest)
    try:
        entry = ledger.append(
            bucket,
            model,
            {
                "action": ERASE,
                "model": model,
                "version": version,
                "requested_by": requested_by,
                "reason": reason,
                "time": _now(),
                "verdict_sha256": body.get("verdict_sha256"),
                "report_sha256": body.get("report_sha256"),
                "manifest_sha256": digest,
                "snapshot_id": body.get("snapshot_id"),
            },
            precondition=unchanged_since(version, sha256_json(old), "the erasure was prepared"),
        )
    except ShopMLError:  # refused: nothing is decided, the staging goes
        for key in bucket.keys(prefix):
            bucket.delete(key)
        raise
    finish(bucket, model, entry)
    return entry


def finish(bucket: Bucket, model: str, entry: ledger.Entry) -> None:
    """The staged files over the version's, its manifest, ``current.json`` naming the entry
    (the served version as the ledger says: the last promotion or rollback), the staging
    removed. Safe to run again; every staged byte is checked against the recorded digest."""
    version, wanted = entry.version, str(entry.body.get("manifest_sha256"))
    prefix = staging_prefix(model, version, wanted)
    current = layout.read_manifest(bucket, model, version)
    if current is None or sha256_json(current) != wanted:
        staged_raw = bucket.get(f"{prefix}/{layout.MANIFEST}")
        body = layout.json_object(bucket, f"{prefix}/{layout.MANIFEST}", staged_raw)
        if body is None or staged_raw is None or sha256_json(body) != wanted:
            raise ShopMLError(
                f"{bucket.url(prefix)}: the rewrite ledger entry {entry.seq} records is not "
                f"staged intact; {model} version {version} cannot be finished (restore the "
                "version from a backup)"
            )
        for rel, digest in sorted(body["files"].items()):
            key = layout.version_key(model, version, rel)
            existing = bucket.get(key)
            if existing is not None and sha256_bytes(existing) == digest:
                continue
            data = bucket.get(f"{prefix}/{rel}")
            if data is None or sha256_bytes(data) != digest:
                raise ShopMLError(f"{bucket.url(f'{prefix}/{rel}')}: staged file missing or altered")  # fmt: skip
            bucket.put(key, data)
        listed = {layout.version_key(model, version, rel) for rel in body["files"]}
        listed.add(layout.version_key(model, version, layout.MANIFEST))
        for key in bucket.keys(layout.version_prefix(model, version)):
            if key not in listed:
                bucket.delete(key)
        bucket.put(layout.version_key(model, version, layout.MANIFEST), staged_raw)
    entries = ledger.read_ledger(bucket, model)
    serving = served_entry(entries[: entry.seq])
    if serving is None:
        raise ShopMLError(f"{bucket.url(model + '/ledger')}: an erasure before any promotion")
    manifest = layout.verify_version(bucket, model, serving.version)
    if manifest is None or sha256_json(manifest) != latest_manifests(entries[: entry.seq]).get(
        serving.version
    ):
        raise ShopMLError(f"{model} version {serving.version} does not verify after the erasure")
    if entries[-1].seq == entry.seq:  # a later entry moved the pointer on already
        bucket.put(
            layout.pointer_key(model),
            layout.pointer_body(
                model, serving.version, serving.body.get("previous_version"), manifest,
                entry.seq, entry.sha256, _now(),
            ),
        )  # fmt: skip
    for key in bucket.keys(prefix):
        bucket.delete(key)


def finish_unfinished(
    bucket: Bucket, model: str, entries: list[ledger.Entry], unfinished: bool
) -> bool:
    """Finish the head ``erase`` entry when the pointer has not followed it yet (the
    verification said ``unfinished``); True when it did."""
    head = entries[-1] if entries else None
    if head is None or head.body["action"] != ERASE or not unfinished:
        return False
    finish(bucket, model, head)
    return True
