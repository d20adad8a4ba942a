"""Promotion to the serving bucket, the append-only ledger, and rollback.

Layout under the serving bucket URI (``file:///...`` or ``s3://bucket/prefix``)::

    <model>/versions/<version>/bundle/...              the recommender bundle
    <model>/versions/<version>/feature_service.json    the features the ranker reads
    <model>/versions/<version>/features/users.parquet  the feature values the bundle serves with
    <model>/versions/<version>/features/items.parquet
    <model>/versions/<version>/report/...              verdict.json, report.html, summary.md
    <model>/versions/<version>/manifest.json           sha256 of every file: written last
    <model>/current.json                               the served version: written after the manifest
    <model>/ledger.jsonl                               one JSON line per promotion or rollback

Order: every file, then the manifest, then ``current.json``, then the MLflow alias
``champion``, then the ledger line. A promotion interrupted anywhere before the manifest
leaves no manifest, and ``current.json`` is only ever pointed at a version whose manifest
is complete and verified. A retried promotion of the served version changes nothing and
adds no second ledger line.

Only the retrain DAG promotes: :func:`promote` refuses a version without a blessed
verdict (tags of ``shopml evaluate``) and a recorded approval (:func:`record_approval`,
written by the DAG from the reviewer's answer).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.settings import Settings

log = logging.getLogger(__name__)
# Every key a ledger line may carry (docs/operations.md describes each).
LEDGER_FIELDS = (
    "action", "model", "version", "previous_version", "approved_by", "comment", "reason",
    "time", "verdict_sha256", "report_sha256", "snapshot_id", "dag_run",
)  # fmt: skip


@dataclass(frozen=True)
class Approval:
    approved_by: str
    dag_run: str | None = None
    comment: str | None = None
    approved_at: str = ""


@dataclass(frozen=True)
class Outcome:
    action: str  # promote | rollback
    version: int
    previous: int | None
    changed: bool
    entry: dict[str, Any] | None  # the ledger line written (None when nothing changed)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _client(settings: Settings) -> Any:
    from pipelines.registry.models import _mlflow, configure

    configure(settings)
    return _mlflow().MlflowClient()


def _version(client: Any, name: str, version: int) -> Any:
    try:
        return client.get_model_version(name, str(version))
    except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
        raise ShopMLError(f"model {name} has no version {version}") from exc


def record_approval(name: str, version: int, approval: Approval, settings: Settings) -> None:
    """Tag the model version with the reviewer's approval (the DAG does this)."""
    from pipelines.registry.models import tag_version

    _version(_client(settings), name, version)
    tag_version(
        name,
        version,
        {
            "review.approved_by": approval.approved_by,
            "review.dag_run": approval.dag_run or "",
            "review.comment": approval.comment or "",
            "review.approved_at": approval.approved_at or _now(),
        },
    )


def _pointer(bucket: Bucket, name: str) -> dict[str, Any] | None:
    raw = bucket.get(f"{name}/current.json")
    return None if raw is None else dict(json.loads(raw))


def served_version(settings: Settings, name: str) -> int | None:
    """The version ``current.json`` points to (None before the first promotion)."""
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    current = _pointer(bucket, name)
    return None if current is None else int(current["version"])


def ledger(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every line of the model's ledger, oldest first."""
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    raw = bucket.get(f"{name}/ledger.jsonl") or b""
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]


def verify_version(bucket: Bucket, name: str, version: int) -> dict[str, Any] | None:
    """The version's manifest when it and every file it lists are intact, else None."""
    raw = bucket.get(f"{name}/versions/{version}/manifest.json")
    if raw is None:
        return None
    manifest = dict(json.loads(raw))
    for rel, digest in manifest["files"].items():
        data = bucket.get(f"{name}/versions/{version}/{rel}")
        if data is None or _sha(data) != digest:
            return None
    return manifest


def _stage(name: str, version: int, mv: Any, settings: Settings, out: Path) -> dict[str, Any]:
    """Gather the files of one version into ``out``; return the manifest's metadata."""
    import pandas as pd

    from feature_store.definitions import recommender_ranker
    from pipelines.recommender.bundle import Recommender
    from pipelines.recommender.rows import STORE_ITEM_FEATURES, STORE_USER_FEATURES
    from pipelines.registry.models import _mlflow, quiet_mlflow

    mlflow = _mlflow()
    with quiet_mlflow():
        model_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{name}/{version}", dst_path=str(out / "_model")
            )
        )
        evaluation = mv.tags["eval.artifacts"]
        report_dir = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=evaluation, dst_path=str(out / "_eval")
            )
        )
    bundle = model_dir / "artifacts" / "bundle"
    (out / "bundle").mkdir()
    for f in sorted(bundle.rglob("*")):
        if f.is_file():
            target = out / "bundle" / f.relative_to(bundle)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    (out / "report").mkdir()
    for file in ("verdict.json", "report.html", "summary.md"):
        (out / "report" / file).write_bytes((report_dir / file).read_bytes())
    service = {
        "name": recommender_ranker.name,
        "features": [
            f"{p.name}:{field.name}"
            for p in recommender_ranker.feature_view_projections
            for field in p.features
        ],
    }
    (out / "feature_service.json").write_text(json.dumps(service, indent=2) + "\n")
    rec = Recommender.load(out / "bundle")
    (out / "features").mkdir()
    users = pd.DataFrame({"user_id": rec.ctx.user_ids.astype(str)})
    items = pd.DataFrame({"item_id": rec.ctx.item_ids.astype(str)})
    if rec.store is not None:
        users = users.join(pd.DataFrame(rec.store.users, columns=list(STORE_USER_FEATURES)))
        items = items.join(pd.DataFrame(rec.store.items, columns=list(STORE_ITEM_FEATURES)))
    users.to_parquet(out / "features" / "users.parquet", index=False)
    items.to_parquet(out / "features" / "items.parquet", index=False)
    for tmp in ("_model", "_eval"):
        shutil.rmtree(out / tmp, ignore_errors=True)
    return {
        "snapshot_id": mv.tags.get("snapshot_id", ""),
        "eval_set_hash": mv.tags.get("eval.eval_set_hash", ""),
        "verdict_sha256": mv.tags.get("eval.verdict_sha256", ""),
        "report_sha256": mv.tags.get("eval.report_sha256", ""),
    }


def _upload(bucket: Bucket, name: str, version: int, staged: Path, meta: dict[str, Any]) -> None:
    files: dict[str, str] = {}
    for f in sorted(p for p in staged.rglob("*") if p.is_file()):
        rel = str(f.relative_to(staged))
        data = f.read_bytes()
        bucket.put(f"{name}/versions/{version}/{rel}", data)
        files[rel] = _sha(data)
    manifest = {"model": name, "version": version, **meta, "files": files, "created_at": _now()}
    bucket.put(
        f"{name}/versions/{version}/manifest.json",
        (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
    )


def _point(
    bucket: Bucket, name: str, version: int, previous: int | None, manifest: dict[str, Any]
) -> None:
    body = {
        "model": name,
        "version": version,
        "previous_version": previous,
        "manifest_sha256": _sha(json.dumps(manifest, sort_keys=True).encode()),
        "updated_at": _now(),
    }
    bucket.put(f"{name}/current.json", (json.dumps(body, indent=2) + "\n").encode())


def promote(
    *, version: int, settings: Settings, name: str | None = None, dag_run: str | None = None
) -> Outcome:
    """Copy ``version`` to the serving bucket and make it the served model (see the module
    docstring for the order). Refuses a version that is not blessed and approved."""
    from pipelines.registry.models import CHAMPION, MODEL_NAME

    name = name or MODEL_NAME
    client = _client(settings)
    mv = _version(client, name, version)
    tags = dict(mv.tags)
    if tags.get("eval.blessed") != "true":
        state = "was not blessed" if "eval.blessed" in tags else "has no verdict"
        raise ShopMLError(
            f"{name} version {version} {state}; only a version blessed by `shopml evaluate` "
            "may be promoted"
        )
    if not tags.get("review.approved_by"):
        raise ShopMLError(
            f"{name} version {version} has no recorded approval; promotion happens in the "
            "shopml_retrain DAG after a reviewer approves (`shopml review approve`)"
        )
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    current = _pointer(bucket, name)
    previous = None if current is None else int(current["version"])
    history = ledger(settings, name)
    last = history[-1] if history else None
    if (
        previous == version
        and last
        and (last["action"], last["version"])
        in (
            ("promote", version),
            ("rollback", version),
        )
    ):
        client.set_registered_model_alias(name, CHAMPION, str(version))
        log.info("%s version %d is already served; nothing to do", name, version)
        return Outcome("promote", version, previous, False, None)
    manifest = verify_version(bucket, name, version)
    if manifest is None:
        with tempfile.TemporaryDirectory(prefix="shopml-promote-") as tmp:
            staged = Path(tmp) / "v"
            staged.mkdir()
            meta = _stage(name, version, mv, settings, staged)
            _upload(bucket, name, version, staged, meta)
        manifest = verify_version(bucket, name, version)
        if manifest is None:
            raise ShopMLError(f"{bucket.url(f'{name}/versions/{version}')}: upload did not verify")
    if previous != version:
        _point(bucket, name, version, previous, manifest)
    elif current is not None:  # pointer moved before an interruption: finish the rest
        previous = current.get("previous_version")
    client.set_registered_model_alias(name, CHAMPION, str(version))
    entry = {
        "action": "promote",
        "model": name,
        "version": version,
        "previous_version": previous,
        "approved_by": tags["review.approved_by"],
        "comment": tags.get("review.comment", ""),
        "time": _now(),
        "verdict_sha256": manifest.get("verdict_sha256", ""),
        "report_sha256": manifest.get("report_sha256", ""),
        "snapshot_id": manifest.get("snapshot_id", ""),
        "dag_run": dag_run or tags.get("review.dag_run", ""),
    }
    bucket.append_line(f"{name}/ledger.jsonl", json.dumps(entry, sort_keys=True))
    return Outcome("promote", version, previous, True, entry)


def rollback(
    *,
    to_version: int,
    reason: str,
    settings: Settings,
    requested_by: str,
    name: str | None = None,
    dag_run: str | None = None,
) -> Outcome:
    """Serve an earlier promoted ``to_version`` again: pointer, alias, ledger line."""
    from pipelines.registry.models import CHAMPION, MODEL_NAME

    name = name or MODEL_NAME
    if not reason.strip():
        raise ShopMLError("a rollback needs a reason")
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    manifest = verify_version(bucket, name, to_version)
    if manifest is None:
        promoted = sorted({e["version"] for e in ledger(settings, name)})
        raise ShopMLError(
            f"{name} version {to_version} is not a complete promoted version in "
            f"{bucket.uri} (promoted: {promoted or 'none'}); only those can be served again"
        )
    current = _pointer(bucket, name)
    previous = None if current is None else int(current["version"])
    if previous == to_version:
        raise ShopMLError(f"{name} version {to_version} is already the served version")
    client = _client(settings)
    _version(client, name, to_version)
    _point(bucket, name, to_version, previous, manifest)
    client.set_registered_model_alias(name, CHAMPION, str(to_version))
    entry = {
        "action": "rollback",
        "model": name,
        "version": to_version,
        "previous_version": previous,
        "approved_by": requested_by,
        "reason": reason,
        "time": _now(),
        "verdict_sha256": manifest.get("verdict_sha256", ""),
        "report_sha256": manifest.get("report_sha256", ""),
        "snapshot_id": manifest.get("snapshot_id", ""),
        "dag_run": dag_run or "",
    }
    bucket.append_line(f"{name}/ledger.jsonl", json.dumps(entry, sort_keys=True))
    return Outcome("rollback", to_version, previous, True, entry)
