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

1. the changed files and the new manifest are staged under
   ``<model>/erasing/<version>/<new manifest digest>/``;
2. the ``erase`` ledger entry is appended, only if no other writer rewrote the version since
   it was read (checked against the entries it follows; from here the rewrite is decided);
3. the staged files are copied over the version's, then its manifest;
4. ``current.json`` names the new ledger head (the served version, from the last promotion
   or rollback, does not change; when it is the rewritten one, serving sees a new manifest
   digest and reloads it);
5. the staging folder is removed.

Steps 3-5 are :func:`pipelines.promotion.erasure.finish`: the next promotion, rollback or
``forget`` finishes an erasure interrupted after its entry. A version whose files cannot be
rewritten (a trace left in a file of an unknown kind, a bundle that does not load) is left
as it was and reported as pending.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import folder_digest, sha256_bytes, sha256_json
from pipelines.privacy.scan import scan_file, scrub_file
from pipelines.promotion import erasure, layout
from pipelines.promotion.bucket import Bucket
from pipelines.promotion.verify import UNFINISHED, latest_manifests, verify_model
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL

log = logging.getLogger(__name__)
SERVED_MODELS = (MODEL_NAME, SEARCH_MODEL)


@dataclass
class BundleErasure:
    """What :func:`erase_promoted` did: shoppers' rows blanked in bundles, files rewritten,
    versions rewritten as ``model/version``, and what it could not do."""

    rows: int = 0
    files: int = 0
    versions: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def erase_promoted(
    bucket: Bucket, forms: list[str], *, request_seq: int, requested_by: str
) -> BundleErasure:
    """Rewrite every promoted version that holds one of ``forms`` (the shoppers' ids as
    stored); finish an erasure an earlier run left half done first. What cannot be done
    (a damaged bucket, an unfinished promotion, a bundle that does not load, the store
    failing) is returned as pending, naming the version; the other versions go on."""
    out = BundleErasure()
    for model in SERVED_MODELS:
        try:
            state = verify_model(bucket, model, versions=[])
            unfinished = any(p.kind == UNFINISHED for p in state.problems)
            if erasure.finish_unfinished(bucket, model, state.entries, unfinished):
                log.info("%s: finished an interrupted erasure (ledger entry %d)", model, state.entries[-1].seq)  # fmt: skip
                state = verify_model(bucket, model, versions=[])
                unfinished = any(p.kind == UNFINISHED for p in state.problems)
            if not state.entries and state.ok and state.pointer is None:
                continue  # never promoted
            state.require_intact(f"erasing shoppers from {model}")
            if unfinished:
                raise ShopMLError(
                    f"the {state.entries[-1].body['action']} of {model} version "
                    f"{state.entries[-1].version} did not finish; finish it first (rerun it)"
                )
        except Exception as exc:  # the bucket failing or damaged: the rest goes on
            out.pending.append(f"{model} in {bucket.uri}: not erased ({first_line(exc)})")
            continue
        recorded = latest_manifests(state.entries)
        for version in sorted(recorded):
            try:
                _erase_version(
                    bucket, model, version, recorded[version], forms, request_seq,
                    requested_by, out,
                )  # fmt: skip
            except Exception as exc:  # a bundle that does not load, the store failing
                out.pending.append(
                    f"{model} version {version}: not rewritten ({first_line(exc)}); run "
                    "forget again once the cause is fixed"
                )
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def first_line(exc: BaseException) -> str:
    """An error's first line (a store's errors carry pages of detail)."""
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _erase_version(
    bucket: Bucket,
    model: str,
    version: int,
    recorded: str,
    forms: list[str],
    request_seq: int,
    requested_by: str,
    out: BundleErasure,
) -> None:
    manifest = layout.read_manifest(bucket, model, version)
    if manifest is None or sha256_json(manifest) != recorded:
        raise ShopMLError(
            f"{bucket.url(layout.version_key(model, version, layout.MANIFEST))}: missing or "
            "not the manifest the ledger recorded; nothing was erased"
        )
    with tempfile.TemporaryDirectory(prefix="shopml-erase-") as tmp:
        folder = Path(tmp) / "version"
        # every file checked against the manifest as it is read: the version's own
        # verification, without reading it twice
        layout.copy_version(bucket, model, version, manifest, folder, ShopMLError)
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
        body = _manifest(model, version, manifest, files, folder, request_seq)
        entry = erasure.record(
            bucket, model, version, manifest,
            {rel: (folder / rel).read_bytes() for rel in changed}, body,
            requested_by=requested_by, reason=f"erasure request {request_seq}",
        )  # fmt: skip
    out.rows += rows
    out.files += len(changed)
    out.versions.append(f"{model}/{version}")
    log.info(
        "%s version %d rewritten without %d shopper row(s): %d file(s), ledger entry %d",
        model, version, rows, len(changed), entry.seq,
    )  # fmt: skip


def erase_bundle(model: str, bundle: Path, forms: list[str]) -> tuple[int, Any]:
    """Blank the shoppers in the bundle folder of ``model`` (a recommender's or a search
    model's), written back in place; returns the rows blanked and the erased model."""
    if model == MODEL_NAME:
        from pipelines.recommender.bundle import Recommender

        loaded: Any = Recommender.load(bundle)
    else:
        from pipelines.search.model import SearchModel

        loaded = SearchModel.load(bundle)
    rows = loaded.erase_users(forms)
    saved = bundle.with_name(bundle.name + ".erased")  # whole, then in place of the old one
    loaded.save(saved)
    shutil.rmtree(bundle)
    saved.rename(bundle)
    return rows, loaded


def _rewrite(model: str, folder: Path, forms: list[str]) -> int:
    """Blank the shoppers in the bundle (and the recommender's served feature values);
    scrub the report files. Returns the bundle rows blanked."""
    rows, erased = erase_bundle(model, folder / layout.BUNDLE, forms)
    if model == MODEL_NAME and (folder / layout.FEATURES / "users.parquet").is_file():
        from pipelines.promotion.promote import write_feature_values

        write_feature_values(erased, folder / layout.FEATURES, items=False)
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
    folder: Path,
    request_seq: int,
) -> bytes:
    """The rewritten version's manifest: the old one's metadata, the new files, and a
    record of the erasure (the request and the digest of the manifest it replaces)."""
    meta = {k: v for k, v in old.items() if k not in ("model", "version", "files", "created_at")}
    for name, rel in (("verdict_sha256", "verdict.json"), ("report_sha256", "report.html")):
        digest = files.get(f"{layout.REPORT}/{rel}")
        if name in meta and digest is not None:
            meta[name] = digest
    if "bundle_sha256" in meta:  # the bundle as it is now (the verdict keeps the old one)
        meta["bundle_sha256"] = folder_digest(folder / layout.BUNDLE)
    record = {"request": request_seq, "replaces_manifest": sha256_json(old), "time": _now()}
    meta["erasures"] = [*meta.get("erasures", []), record]
    return layout.manifest_body(model, version, files, meta, str(old["created_at"]))
