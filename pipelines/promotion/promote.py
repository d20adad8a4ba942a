"""Promotion to the serving bucket, the append-only ledger, and rollback.

The bucket's layout (keys, manifest, pointer) is :mod:`pipelines.promotion.layout`.

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

import logging
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from feature_store.definitions import recommender_ranker
from pipelines.errors import ShopMLError
from pipelines.io import dumps, sha256_bytes, write_json
from pipelines.promotion import layout
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.rows import STORE_ITEM_FEATURES, STORE_USER_FEATURES
from pipelines.registry.models import CHAMPION, MODEL_NAME, tag_version
from pipelines.registry.tracking import configure, mlflow_module, quiet_mlflow
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


def _client(settings: Settings) -> Any:
    configure(settings)
    return mlflow_module().MlflowClient()


def _version(client: Any, name: str, version: int) -> Any:
    try:
        return client.get_model_version(name, str(version))
    except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
        raise ShopMLError(f"model {name} has no version {version}") from exc


def record_approval(name: str, version: int, approval: Approval, settings: Settings) -> None:
    """Tag the model version with the reviewer's approval (the DAG does this)."""
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


def _bucket(settings: Settings) -> Bucket:
    return open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)


def served_version(settings: Settings, name: str) -> int | None:
    """The version ``current.json`` points to (None before the first promotion)."""
    current = layout.read_pointer(_bucket(settings), name)
    return None if current is None else int(current["version"])


def ledger(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every line of the model's ledger, oldest first."""
    return layout.read_ledger(_bucket(settings), name)


def _stage(name: str, version: int, mv: Any, settings: Settings, out: Path) -> dict[str, Any]:
    """Gather the files of one version into ``out``; return the manifest's metadata."""
    mlflow = mlflow_module()
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
    shutil.copytree(bundle, out / layout.BUNDLE)
    (out / layout.REPORT).mkdir()
    for file in layout.REPORT_FILES:
        shutil.copyfile(report_dir / file, out / layout.REPORT / file)
    service = {
        "name": recommender_ranker.name,
        "features": [
            f"{p.name}:{field.name}"
            for p in recommender_ranker.feature_view_projections
            for field in p.features
        ],
    }
    write_json(out / layout.FEATURE_SERVICE, service)
    rec = Recommender.load(out / layout.BUNDLE)
    (out / layout.FEATURES).mkdir()
    users = pd.DataFrame({"user_id": rec.ctx.user_ids.astype(str)})
    items = pd.DataFrame({"item_id": rec.ctx.item_ids.astype(str)})
    if rec.store is not None:
        users = users.join(pd.DataFrame(rec.store.users, columns=list(STORE_USER_FEATURES)))
        items = items.join(pd.DataFrame(rec.store.items, columns=list(STORE_ITEM_FEATURES)))
    users.to_parquet(out / layout.FEATURES / "users.parquet", index=False)
    items.to_parquet(out / layout.FEATURES / "items.parquet", index=False)
    for tmp in ("_model", "_eval"):
        shutil.rmtree(out / tmp, ignore_errors=True)
    return {
        "snapshot_id": mv.tags.get("snapshot_id", ""),
        "eval_set_hash": mv.tags.get("eval.eval_set_hash", ""),
        "verdict_sha256": mv.tags.get("eval.verdict_sha256", ""),
        "report_sha256": mv.tags.get("eval.report_sha256", ""),
    }


def _upload(bucket: Bucket, name: str, version: int, staged: Path, meta: dict[str, Any]) -> None:
    """Every staged file, then the manifest listing them (last: it completes the version)."""
    files: dict[str, str] = {}
    for f in sorted(p for p in staged.rglob("*") if p.is_file()):
        rel = f.relative_to(staged).as_posix()
        data = f.read_bytes()
        bucket.put(layout.version_key(name, version, rel), data)
        files[rel] = sha256_bytes(data)
    body = layout.manifest_body(name, version, files, meta, _now())
    bucket.put(layout.version_key(name, version, layout.MANIFEST), body)


def _point(
    bucket: Bucket, name: str, version: int, previous: int | None, manifest: dict[str, Any]
) -> None:
    bucket.put(
        layout.pointer_key(name), layout.pointer_body(name, version, previous, manifest, _now())
    )


def promote(
    *, version: int, settings: Settings, name: str | None = None, dag_run: str | None = None
) -> Outcome:
    """Copy ``version`` to the serving bucket and make it the served model (see the module
    docstring for the order). Refuses a version that is not blessed and approved."""
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
    bucket = _bucket(settings)
    current = layout.read_pointer(bucket, name)
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
    manifest = layout.verify_version(bucket, name, version)
    if manifest is None:
        with tempfile.TemporaryDirectory(prefix="shopml-promote-") as tmp:
            staged = Path(tmp) / "v"
            staged.mkdir()
            meta = _stage(name, version, mv, settings, staged)
            _upload(bucket, name, version, staged, meta)
        manifest = layout.verify_version(bucket, name, version)
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
    bucket.append_line(layout.ledger_key(name), dumps(entry, sort_keys=True, indent=None))
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
    name = name or MODEL_NAME
    if not reason.strip():
        raise ShopMLError("a rollback needs a reason")
    bucket = _bucket(settings)
    manifest = layout.verify_version(bucket, name, to_version)
    if manifest is None:
        promoted = sorted({e["version"] for e in ledger(settings, name)})
        raise ShopMLError(
            f"{name} version {to_version} is not a complete promoted version in "
            f"{bucket.uri} (promoted: {promoted or 'none'}); only those can be served again"
        )
    current = layout.read_pointer(bucket, name)
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
    bucket.append_line(layout.ledger_key(name), dumps(entry, sort_keys=True, indent=None))
    return Outcome("rollback", to_version, previous, True, entry)
