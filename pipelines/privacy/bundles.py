"""Erasing shoppers from the promoted versions in the serving bucket (docs/privacy.md).

Every version the promotion ledger recorded (the served one and those a rollback may
serve again) whose files hold a shopper is rewritten in place, under the same number:

- the bundle: :meth:`Recommender.erase_users` / :meth:`SearchModel.erase_users` blank the
  shopper's rows (history, repeat purchases, demographics, store features, user factors,
  search profiles) and replace their id with a random tombstone, so the bundle loads and
  answers every other shopper the same;
- the recommender's served feature values (``features/users.parquet``) are written again
  from the erased bundle (same rows, same order: serving checks that);
- report files: the ids replaced by ``[erased]``.

The promotion ledger's integrity holds through it. A rewritten version gets a new
manifest that names the erasure request and the manifest it replaces, and an ``erase``
entry in the model's ledger records the new manifest's digest (so ``shopml promotions
verify``, rollback and serving check the rewritten files against the ledger). Order, so
that an interruption at any point is finished by the next ``forget``:

1. the changed files and the new manifest are staged under ``<model>/erasing/<version>/``;
2. the ``erase`` ledger entry is appended (from here the rewrite is decided);
3. the staged files are copied over the version's, then its manifest;
4. ``current.json`` names the new ledger head (the served version does not change; when it
   is the rewritten one, serving sees a new manifest digest and reloads it);
5. the staging folder is removed.

A version whose files cannot be rewritten (a trace left in a file of an unknown kind) is
left as it was and reported as pending.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import sha256_bytes, sha256_json, write_bytes
from pipelines.privacy.scan import scan_file, scrub_file
from pipelines.promotion import layout, ledger
from pipelines.promotion.bucket import Bucket
from pipelines.promotion.verify import ERASE, UNFINISHED, verify_model
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL

log = logging.getLogger(__name__)
STAGING = "erasing"
SERVED_MODELS = (MODEL_NAME, SEARCH_MODEL)


@dataclass
class BundleErasure:
    """What :func:`erase_promoted` did: shoppers' rows blanked in bundles, files rewritten,
    versions rewritten as ``model/version``, and what it could not do."""

    rows: int = 0
    files: int = 0
    versions: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def staging_prefix(model: str, version: int) -> str:
    return f"{model}/{STAGING}/{version}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def erase_promoted(
    bucket: Bucket, forms: list[str], *, request_seq: int, requested_by: str
) -> BundleErasure:
    """Rewrite every promoted version that holds one of ``forms`` (the shoppers' ids as
    stored); finish an erasure an earlier run left half done first."""
    out = BundleErasure()
    for model in SERVED_MODELS:
        state = verify_model(bucket, model, versions=[])
        head = state.head
        if (
            head is not None
            and head.body["action"] == ERASE
            and any(p.kind == UNFINISHED for p in state.problems)
        ):
            log.info("%s: finishing the erasure of version %d (ledger entry %d)", model, head.version, head.seq)  # fmt: skip
            _apply(bucket, model, head)
            state = verify_model(bucket, model, versions=[])
        if not state.entries:
            continue
        state.require_intact(f"erasing shoppers from {model}")
        for version in sorted({e.version for e in state.entries}):
            _erase_version(bucket, model, version, forms, request_seq, requested_by, out)
    return out


def _download(bucket: Bucket, model: str, version: int, manifest: dict[str, Any], to: Path) -> None:
    for rel, digest in sorted(manifest["files"].items()):
        key = layout.version_key(model, version, rel)
        data = bucket.get(key)
        if data is None or sha256_bytes(data) != digest:
            raise ShopMLError(f"{bucket.url(key)}: missing or altered; nothing was erased")
        write_bytes(to / rel, data)


def _erase_version(
    bucket: Bucket,
    model: str,
    version: int,
    forms: list[str],
    request_seq: int,
    requested_by: str,
    out: BundleErasure,
) -> None:
    verify_model(bucket, model, versions=[version]).require_intact(
        f"erasing shoppers from {model} version {version}"
    )
    manifest = layout.read_manifest(bucket, model, version)
    if manifest is None:  # verified above: a recorded version has one
        raise ShopMLError(f"{model} version {version}: no manifest")
    with tempfile.TemporaryDirectory(prefix="shopml-erase-") as tmp:
        folder = Path(tmp) / "version"
        _download(bucket, model, version, manifest, folder)
        if not any(scan_file(folder / rel, forms).traces for rel in manifest["files"]):
            return
        rows = _rewrite(model, folder, forms)
        files = {
            p.relative_to(folder).as_posix(): sha256_bytes(p.read_bytes())
            for p in sorted(folder.rglob("*"))
            if p.is_file()
        }
        left = [rel for rel in files if scan_file(folder / rel, forms).traces]
        if left:
            out.pending.append(
                f"{bucket.url(layout.version_key(model, version, left[0]))}: still holds the "
                f"shoppers after the rewrite ({len(left)} file(s)); {model} version {version} "
                "left as it was"
            )
            return
        changed = sorted(rel for rel, d in files.items() if manifest["files"].get(rel) != d)
        body = _manifest(model, version, manifest, files, request_seq)
        prefix = staging_prefix(model, version)
        for key in bucket.keys(prefix):  # an earlier try that stopped before its entry
            bucket.delete(key)
        for rel in changed:
            bucket.put_file(f"{prefix}/{rel}", folder / rel)
        bucket.put(f"{prefix}/{layout.MANIFEST}", body)
    new_manifest = json.loads(body)
    entry = ledger.append(
        bucket,
        model,
        {
            "action": ERASE,
            "model": model,
            "version": version,
            "requested_by": requested_by,
            "reason": f"erasure request {request_seq}",
            "time": _now(),
            "verdict_sha256": new_manifest.get("verdict_sha256"),
            "report_sha256": new_manifest.get("report_sha256"),
            "manifest_sha256": sha256_json(new_manifest),
            "snapshot_id": new_manifest.get("snapshot_id"),
        },
    )
    _apply(bucket, model, entry)
    out.rows += rows
    out.files += len(changed)
    out.versions.append(f"{model}/{version}")
    log.info(
        "%s version %d rewritten without %d shopper row(s): %d file(s), ledger entry %d",
        model, version, rows, len(changed), entry.seq,
    )  # fmt: skip


def _rewrite(model: str, folder: Path, forms: list[str]) -> int:
    """Blank the shoppers in the bundle (and the recommender's served feature values);
    scrub the report files. Returns the bundle rows blanked."""
    bundle = folder / layout.BUNDLE
    if model == MODEL_NAME:
        from pipelines.promotion.promote import write_feature_values
        from pipelines.recommender.bundle import Recommender

        rec = Recommender.load(bundle)
        rows = rec.erase_users(forms)
        shutil.rmtree(bundle)
        rec.save(bundle)
        if (folder / layout.FEATURES / "users.parquet").is_file():
            write_feature_values(rec, folder / layout.FEATURES, items=False)
    else:
        from pipelines.search.model import SearchModel

        search = SearchModel.load(bundle)
        rows = search.erase_users(forms)
        search.save(bundle, overwrite=True)
    report = folder / layout.REPORT
    for path in sorted(report.rglob("*")) if report.is_dir() else []:
        if path.is_file():
            scrub_file(path, forms)
    return rows


def _manifest(
    model: str,
    version: int,
    old: dict[str, Any],
    files: dict[str, str],
    request_seq: int,
) -> bytes:
    """The rewritten version's manifest: the old one's metadata, the new files, and a
    record of the erasure (the request and the digest of the manifest it replaces)."""
    meta = {k: v for k, v in old.items() if k not in ("model", "version", "files", "created_at")}
    for name, rel in (("verdict_sha256", "verdict.json"), ("report_sha256", "report.html")):
        digest = files.get(f"{layout.REPORT}/{rel}")
        if name in meta and digest is not None:
            meta[name] = digest
    record = {"request": request_seq, "replaces_manifest": sha256_json(old), "time": _now()}
    meta["erasures"] = [*meta.get("erasures", []), record]
    return layout.manifest_body(model, version, files, meta, str(old["created_at"]))


def _apply(bucket: Bucket, model: str, entry: ledger.Entry) -> None:
    """Steps 3-5: the staged files over the version's, its manifest, the pointer, the
    staging folder removed. Safe to run again."""
    version, prefix = entry.version, staging_prefix(model, entry.version)
    staged_raw = bucket.get(f"{prefix}/{layout.MANIFEST}")
    current = layout.read_manifest(bucket, model, version)
    wanted = entry.body.get("manifest_sha256")
    if current is not None and sha256_json(current) == wanted:
        body = None  # copied before an interruption; the pointer and the staging remain
    elif staged_raw is None:
        raise ShopMLError(
            f"{bucket.url(prefix)}: the rewrite that ledger entry {entry.seq} records is not "
            f"staged; {model} version {version} cannot be finished (restore it from a backup)"
        )
    else:
        body = layout.json_object(bucket, f"{prefix}/{layout.MANIFEST}", staged_raw)
        if body is None or sha256_json(body) != wanted:
            raise ShopMLError(
                f"{bucket.url(prefix)}: the staged manifest is not the one ledger entry "
                f"{entry.seq} records"
            )
    if body is not None:
        for rel, digest in sorted(body["files"].items()):
            key = layout.version_key(model, version, rel)
            existing = bucket.get(key)
            if existing is not None and sha256_bytes(existing) == digest:
                continue
            data = bucket.get(f"{prefix}/{rel}")
            if data is None or sha256_bytes(data) != digest:
                raise ShopMLError(
                    f"{bucket.url(f'{prefix}/{rel}')}: staged file missing or altered"
                )
            bucket.put(key, data)
        listed = {layout.version_key(model, version, rel) for rel in body["files"]}
        listed.add(layout.version_key(model, version, layout.MANIFEST))
        for key in bucket.keys(layout.version_prefix(model, version)):
            if key not in listed:
                bucket.delete(key)
        bucket.put(layout.version_key(model, version, layout.MANIFEST), staged_raw or b"")
    pointer = layout.read_pointer(bucket, model)
    if pointer is None:
        raise ShopMLError(f"{bucket.url(layout.pointer_key(model))}: missing")
    served = int(pointer["version"])
    manifest = layout.verify_version(bucket, model, served)
    if manifest is None:
        raise ShopMLError(f"{model} version {served} does not verify after the erasure")
    bucket.put(
        layout.pointer_key(model),
        layout.pointer_body(
            model, served, pointer.get("previous_version"), manifest, entry.seq, entry.sha256,
            _now(),
        ),
    )  # fmt: skip
    for key in bucket.keys(prefix):
        bucket.delete(key)
