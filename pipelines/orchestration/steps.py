"""The steps of the ``shopml_retrain`` DAG, each callable without Airflow.

Every step takes and returns small JSON values (paths, ids, versions, flags): the DAG
passes them through XCom, DataFrames never. A run keeps its files in a work folder under
``$SHOPML_HOME/runs/<dag run id>/``.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.settings import Settings, load_settings

log = logging.getLogger(__name__)


def latest_snapshot(settings: Settings) -> Path:
    """The most recently written snapshot under ``$SHOPML_HOME/snapshots``."""
    root = settings.snapshots_dir
    found = sorted(
        (p for p in root.glob("*/manifest.json") if p.is_file()),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        raise ShopMLError(f"no snapshot under {root}; generate or import one first")
    return found[-1].parent


def work_dir(settings: Settings, dag_run_id: str) -> Path:
    return settings.home / "runs" / re.sub(r"[^A-Za-z0-9_.-]+", "_", dag_run_id)


def validate_step(*, snapshot: str | None, config: str | None, dag_run_id: str) -> dict[str, Any]:
    """Validate the snapshot (the param, else the newest one) and plan the training with
    the pipeline config file ``config`` (tables as for ``shopml train``; none: defaults)."""
    from pipelines.recommender.plan import TrainConfig, plan_training

    settings = load_settings()
    path = Path(snapshot) if snapshot else latest_snapshot(settings)
    cfg = TrainConfig.from_toml(config) if config else TrainConfig()
    plan = plan_training(path, cfg)
    folder = work_dir(settings, dag_run_id)
    plan.save(folder)
    return {
        "work_dir": str(folder),
        "snapshot": plan.snapshot_path,
        "snapshot_id": plan.snapshot_id,
        "until": plan.until.isoformat(),
        "config": config or "",
    }


def features_step(info: dict[str, Any]) -> dict[str, Any]:
    from pipelines.recommender.plan import Plan, prepare_features

    seconds = prepare_features(Plan.load(Path(info["work_dir"])), load_settings())
    return {**info, "features_seconds": round(seconds, 1)}


def materialize_step(info: dict[str, Any]) -> dict[str, Any]:
    from pipelines.features.store import materialize

    rows = materialize(load_settings())["rows"]
    return {**info, "online_rows": rows}


def candidates_step(info: dict[str, Any]) -> dict[str, Any]:
    from pipelines.recommender.plan import train_candidates

    train_candidates(work_dir=Path(info["work_dir"]), settings=load_settings())
    return info


def ranker_step(info: dict[str, Any]) -> dict[str, Any]:
    from pipelines.recommender.plan import train_ranker

    metrics = train_ranker(work_dir=Path(info["work_dir"]))
    return {**info, "validation_ndcg": round(next(iter(metrics.values())), 4)}


def register_step(info: dict[str, Any]) -> dict[str, Any]:
    """Register the challenger in the run's MLflow parent run (tags dag_id and run_id)."""
    from pipelines.recommender.plan import register_challenger

    out = register_challenger(
        work_dir=Path(info["work_dir"]),
        settings=load_settings(),
        feature_seconds=float(info.get("features_seconds", 0.0)),
    )
    return {**info, "version": out.version, "model_uri": out.uri, "mlflow_run_id": out.run_id}


def evaluate_step(info: dict[str, Any]) -> dict[str, Any]:
    """Evaluate the challenger against the champion; the summary is the review's body."""
    from pipelines.evaluation.evaluate import EvaluateConfig, evaluate

    settings = load_settings()
    cfg = EvaluateConfig.from_toml(info["config"]) if info.get("config") else None
    result = evaluate(
        model_uri=info["model_uri"],
        snapshot_uri=info["snapshot"],
        settings=settings,
        cfg=cfg,
        out_dir=Path(info["work_dir"]) / "evaluation",
    )
    summary = (result.out_dir / "summary.md").read_text()
    links = (
        f"\n\nReport: {(result.out_dir / 'report.html').resolve().as_uri()}\n"
        f"MLflow run: {info['mlflow_run_id']} (experiment shopml-recommender, "
        f"tracking {settings.mlflow_tracking_uri})\n"
    )
    return {
        **info,
        "blessed": result.blessed,
        "summary": summary + links,
        "report": str(result.out_dir / "report.html"),
        "eval_set_hash": result.eval_set.hash,
    }


def promote_step(
    info: dict[str, Any], review: dict[str, Any] | None, dag_run_id: str
) -> dict[str, Any]:
    """Record the reviewer's approval on the version and promote it."""
    from pipelines.promotion.promote import Approval, promote, record_approval
    from pipelines.registry.models import MODEL_NAME

    review = review or {}
    if review.get("chosen_options") != ["Approve"]:
        raise ShopMLError(f"no approval recorded for {info['model_uri']}: {review!r}")
    user = review.get("responded_by_user") or {}
    approver = str(user.get("name") or user.get("id") or "")
    if not approver:
        raise ShopMLError(f"the approval of {info['model_uri']} names no reviewer")
    settings = load_settings()
    record_approval(
        MODEL_NAME,
        int(info["version"]),
        Approval(
            approved_by=approver,
            dag_run=dag_run_id,
            comment=str((review.get("params_input") or {}).get("comment") or ""),
            approved_at=str(review.get("responded_at") or ""),
        ),
        settings,
    )
    out = promote(version=int(info["version"]), settings=settings, dag_run=dag_run_id)
    return {
        "version": out.version,
        "previous": out.previous,
        "changed": out.changed,
        "approved_by": approver,
    }


def notify_step(result: dict[str, Any]) -> str:
    """One line for the log (and any notifier hooked to this task)."""
    message = (
        f"shopml-recommender version {result['version']} is now served "
        f"(previous: {result['previous']}; approved by {result['approved_by']})"
        if result["changed"]
        else f"shopml-recommender version {result['version']} was already served"
    )
    log.info(message)
    return message


def rollback_step(
    *, version: int, reason: str, requested_by: str, dag_run_id: str
) -> dict[str, Any]:
    from pipelines.promotion.promote import rollback

    out = rollback(
        to_version=version,
        reason=reason,
        settings=load_settings(),
        requested_by=requested_by or "unknown",
        dag_run=dag_run_id,
    )
    return {"version": out.version, "previous": out.previous}
