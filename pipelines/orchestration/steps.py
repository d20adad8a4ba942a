"""The steps of the ``shopml_retrain`` and ``shopml_rollback`` DAGs, each callable without
Airflow.

The retrain steps hand each other one :class:`RunPayload`: a typed record of small
values (paths, ids, versions, flags) that travels through XCom as a dict. DataFrames
never do: a run keeps its files in a work folder under ``$SHOPML_HOME/runs/<dag run id>/``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.evaluation.evaluate import evaluate
from pipelines.features.store import materialize
from pipelines.orchestration.airflow_api import service_client
from pipelines.orchestration.config import PipelineConfig
from pipelines.promotion.promote import promote, rollback
from pipelines.recommender.plan import (
    TrainingPlan,
    plan_training,
    prepare_features,
    run_features,
    train_candidates,
    train_ranker,
)
from pipelines.registry.challenger import register_challenger
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL, register_search
from pipelines.settings import Settings, load_settings, redact
from pipelines.validation.validate import validate_snapshot

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunPayload:
    """What the tasks of one retrain run know, growing step by step."""

    work_dir: str
    snapshot: str
    snapshot_id: str
    until: str  # ISO 8601, UTC: the training time
    config: str = ""  # the pipeline config file ("" = defaults)
    features_seconds: float = 0.0
    online_rows: dict[str, int] = field(default_factory=dict)
    validation_ndcg: float | None = None
    version: int | None = None
    model_uri: str = ""
    mlflow_run_id: str = ""
    blessed: bool | None = None
    summary: str = ""  # the evaluation summary: the body of the approval request
    report: str = ""
    eval_set_hash: str = ""
    # the search branch (its tasks fill these; the recommender's leave them empty)
    search_version: int | None = None
    search_model_uri: str = ""
    search_blessed: bool | None = None
    search_summary: str = ""
    search_report: str = ""

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: Any) -> RunPayload:
        """The payload an earlier task returned; anything else is refused by name."""
        if not isinstance(value, dict):
            raise ShopMLError(f"expected the previous task's payload (a dict), got {value!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ShopMLError(f"unknown payload field(s) {unknown} (known: {sorted(known)})")
        return cls(**value)

    @property
    def folder(self) -> Path:
        return Path(self.work_dir)

    @property
    def registered_version(self) -> int:
        if self.version is None:
            raise ShopMLError("no model version in this run yet (register_challenger runs first)")
        return self.version


@dataclass(frozen=True)
class PromotionResult:
    version: int
    previous: int | None
    changed: bool
    approved_by: str
    model: str = MODEL_NAME

    def to_xcom(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_xcom(cls, value: dict[str, Any]) -> PromotionResult:
        return cls(**value)


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


def validate_step(*, snapshot: str | None, config: str | None, dag_run_id: str) -> RunPayload:
    """Validate the snapshot (the param, else the newest one) with the ``[validation]``
    thresholds of the pipeline config file ``config`` (none: defaults), and plan the
    training with its other tables. A quarantined snapshot stops the run."""
    settings = load_settings()
    path = Path(snapshot) if snapshot else latest_snapshot(settings)
    cfg = PipelineConfig.from_toml(config)
    report = validate_snapshot(snapshot_uri=path, cfg=cfg.validation)
    if not report.accepted:
        first = report.failed[0]
        raise ShopMLError(
            f"snapshot {path} failed {len(report.failed)} validation check(s) and is "
            f"quarantined, e.g. {first.summary}; see {report.folder / 'result.json'}"
        )
    plan = plan_training(path, cfg.train)
    folder = work_dir(settings, dag_run_id)
    plan.save(folder)
    return RunPayload(
        work_dir=str(folder),
        snapshot=plan.snapshot_path,
        snapshot_id=plan.snapshot_id,
        until=plan.until.isoformat(),
        config=config or "",
    )


def features_step(run: RunPayload) -> RunPayload:
    seconds = prepare_features(TrainingPlan.load(run.folder), run.folder)
    return replace(run, features_seconds=round(seconds, 1))


def materialize_step(run: RunPayload) -> RunPayload:
    # the run's own features, published to the one online store
    rows = materialize(load_settings(), source=run_features(run.folder))["rows"]
    return replace(run, online_rows=dict(rows))


def candidates_step(run: RunPayload) -> RunPayload:
    train_candidates(work_dir=run.folder, settings=load_settings())
    return run


def ranker_step(run: RunPayload) -> RunPayload:
    metrics = train_ranker(work_dir=run.folder)
    return replace(run, validation_ndcg=round(next(iter(metrics.values())), 4))


def register_step(run: RunPayload) -> RunPayload:
    """Register the challenger in the run's MLflow parent run (tags dag_id and run_id)."""
    out = register_challenger(
        work_dir=run.folder, settings=load_settings(), feature_seconds=run.features_seconds
    )
    return replace(run, version=out.version, model_uri=out.uri, mlflow_run_id=out.run_id)


def evaluate_step(run: RunPayload) -> RunPayload:
    """Evaluate the challenger against the champion; the summary is the review's body."""
    settings = load_settings()
    result = evaluate(
        model_uri=run.model_uri,
        snapshot_uri=run.snapshot,
        settings=settings,
        cfg=PipelineConfig.from_toml(run.config).evaluate,
        out_dir=run.folder / "evaluation",
    )
    summary = (result.out_dir / "summary.md").read_text()
    links = (
        f"\n\nReport: {(result.out_dir / 'report.html').resolve().as_uri()}\n"
        f"MLflow run: {run.mlflow_run_id} (experiment shopml-recommender, "
        f"tracking {redact(settings.mlflow_tracking_uri)})\n"
    )
    return replace(
        run,
        blessed=result.blessed,
        summary=summary + links,
        report=str(result.out_dir / "report.html"),
        eval_set_hash=result.eval_set.hash,
    )


def promote_step(run: RunPayload, dag_run_id: str) -> PromotionResult:
    """Promote the run's challenger on the strength of Airflow's own record of its approval
    request (read as ShopML's read-only service login, never from XCom), and of the signed
    verdict the run's evaluation wrote. Anything that does not prove out stops the run."""
    settings = load_settings()
    review = service_client(settings).review(dag_run_id)
    out = promote(version=run.registered_version, settings=settings, review=review)
    return PromotionResult(out.version, out.previous, out.changed, review.responded_by or "")


def notify_step(result: PromotionResult) -> str:
    """One line for the log (and any notifier hooked to this task)."""
    message = (
        f"{result.model} version {result.version} is now served "
        f"(previous: {result.previous}; approved by {result.approved_by})"
        if result.changed
        else f"{result.model} version {result.version} was already served"
    )
    log.info(message)
    return message


# ----------------------------------------------------------------------------- search


def _search_dir(run: RunPayload, name: str) -> Path:
    return run.folder / "search" / name


def search_index_step(run: RunPayload) -> RunPayload:
    """Index the snapshot's catalog as of the training time and tune the first stage
    (``[search]`` of the run's config); saved to the run's ``search/prepared``."""
    from pipelines.search.model import prepare

    cfg = PipelineConfig.from_toml(run.config).search.search
    prepare(run.snapshot, cfg).save(_search_dir(run, "prepared"), overwrite=True)
    return run


def search_ranker_step(run: RunPayload) -> RunPayload:
    """Fit the search re-ranker on the prepared index; saved to the run's ``search/model``."""
    from pipelines.search.model import SearchModel, fit

    cfg = PipelineConfig.from_toml(run.config).search.search
    model = fit(SearchModel.load(_search_dir(run, "prepared")), run.snapshot, cfg)
    model.save(_search_dir(run, "model"), overwrite=True)
    return run


def search_register_step(run: RunPayload) -> RunPayload:
    """Register the run's search model as the next ``shopml-search`` challenger."""
    from pipelines.search.model import SearchModel

    model = SearchModel.load(_search_dir(run, "model"))
    out = register_search(model, settings=load_settings())
    return replace(run, search_version=out.version, search_model_uri=out.uri)


def search_evaluate_step(run: RunPayload) -> RunPayload:
    """Evaluate the search challenger against its champion; the summary is the body of
    the search approval request."""
    from pipelines.evaluation.search_eval import evaluate_search

    if not run.search_model_uri:
        raise ShopMLError("no search model in this run yet (register_search_challenger first)")
    settings = load_settings()
    result = evaluate_search(
        model_uri=run.search_model_uri,
        snapshot_uri=run.snapshot,
        settings=settings,
        cfg=PipelineConfig.from_toml(run.config).search,
        out_dir=_search_dir(run, "evaluation"),
    )
    summary = (result.out_dir / "summary.md").read_text()
    links = (
        f"\n\nReport: {(result.out_dir / 'report.html').resolve().as_uri()}\n"
        f"MLflow: {run.search_model_uri} (experiment shopml-search, "
        f"tracking {redact(settings.mlflow_tracking_uri)})\n"
    )
    return replace(
        run,
        search_blessed=result.blessed,
        search_summary=summary + links,
        search_report=str(result.out_dir / "report.html"),
    )


def search_promote_step(run: RunPayload, dag_run_id: str) -> PromotionResult:
    """Promote the run's search challenger on Airflow's record of the search approval
    (task ``await_search_review``) and the run's signed search verdict."""
    from pipelines.promotion.promote import REVIEW_TASKS

    if run.search_version is None:
        raise ShopMLError("no search model version in this run")
    settings = load_settings()
    review = service_client(settings).review(dag_run_id, task_id=REVIEW_TASKS[SEARCH_MODEL])
    out = promote(version=run.search_version, settings=settings, review=review, name=SEARCH_MODEL)
    return PromotionResult(
        out.version, out.previous, out.changed, review.responded_by or "", SEARCH_MODEL
    )


def rollback_step(
    *,
    version: int,
    reason: str,
    requested_by: str | None,
    dag_run_id: str,
    model: str = MODEL_NAME,
) -> dict[str, Any]:
    """Roll back, recorded in the ledger as asked by ``requested_by``: the login that
    triggered the DAG run, as Airflow authenticated it (never a free-text parameter)."""
    if not requested_by:
        raise ShopMLError(
            f"rollback run {dag_run_id} has no triggering user: trigger it as a logged-in "
            "user (`shopml rollback`), so the ledger can say who asked"
        )
    out = rollback(
        to_version=version,
        reason=reason,
        settings=load_settings(),
        requested_by=requested_by,
        dag_run=dag_run_id,
        name=model,
    )
    return {"model": model, "version": out.version, "previous": out.previous}
