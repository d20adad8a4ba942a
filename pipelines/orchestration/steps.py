"""The steps of the ``shopml_retrain`` and ``shopml_rollback`` DAGs, each callable without
Airflow.

The retrain steps hand each other one :class:`RunPayload`: a typed record of small
values (URIs, ids, versions, flags) that travels through XCom as a dict. DataFrames
never do, and neither do local paths: a run keeps its files under its work URI
(``work_uri``/<dag run id>: ``$SHOPML_HOME/runs/`` embedded, ``s3://`` in production), and
each step names the parts it reads and writes (:mod:`pipelines.orchestration.workspace`),
so consecutive steps may run on different workers.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.evaluation.evaluate import evaluate
from pipelines.features.store import materialize
from pipelines.orchestration.airflow_api import service_client
from pipelines.orchestration.config import PipelineConfig
from pipelines.orchestration.workspace import is_local, local_folder, opened, publish_tree, run_uri
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

    work_uri: str  # the run's work storage (file:// or s3://), never a worker's folder
    snapshot: str  # where the snapshot was read from (for people; steps read the run's copy)
    snapshot_id: str
    until: str  # ISO 8601, UTC: the training time
    config: str = ""  # the pipeline config file given ("" = defaults); the run keeps a copy
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

    def reads(self, *parts: str) -> list[str]:
        """``parts`` and the run's copy of its config file, when it has one."""
        return [*parts, *([CONFIG] if self.config else [])]

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


CONFIG = "config.toml"  # the run's copy of its pipeline config file
SNAPSHOT = "snapshot"  # the run's copy of its snapshot, when the work storage is remote


@contextmanager
def _work(
    run: RunPayload, *, reads: Sequence[str] = (), writes: Sequence[str] = ()
) -> Iterator[Path]:
    with opened(run.work_uri, load_settings(), reads=reads, writes=writes) as folder:
        yield folder


def _config(folder: Path) -> PipelineConfig:
    path = folder / CONFIG
    return PipelineConfig.from_toml(path if path.is_file() else None)


def _link(run: RunPayload, folder: Path, path: Path) -> str:
    """Where people open a file the step wrote: the local file, or its work URI."""
    if is_local(run.work_uri):
        return path.resolve().as_uri()
    return f"{run.work_uri}/{path.relative_to(folder).as_posix()}"


def work_folder(settings: Settings, dag_run_id: str) -> Path | None:
    """The local folder of a run's work storage (None when it is remote)."""
    uri = run_uri(settings, dag_run_id)
    return local_folder(uri) if is_local(uri) else None


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
    uri = run_uri(settings, dag_run_id)
    writes = ["plan.json", *([CONFIG] if config else [])]
    with opened(uri, settings, writes=writes) as folder:
        if config:
            shutil.copyfile(config, folder / CONFIG)
        if not is_local(uri):  # other workers cannot read this one's disk: the run's copy
            publish_tree(uri, settings, SNAPSHOT, Path(plan.snapshot_path))
            plan = replace(plan, snapshot_path=SNAPSHOT)  # relative: inside the run
        plan.save(folder)
    return RunPayload(
        work_uri=uri,
        snapshot=str(path),
        snapshot_id=plan.snapshot_id,
        until=plan.until.isoformat(),
        config=config or "",
    )


def _snapshot_parts(run: RunPayload) -> list[str]:
    """The plan, and the run's copy of the snapshot when the work storage is remote."""
    return ["plan.json", *([] if is_local(run.work_uri) else [SNAPSHOT])]


def _snapshot(folder: Path) -> str:
    return TrainingPlan.load(folder).snapshot_path


def features_step(run: RunPayload) -> RunPayload:
    with _work(run, reads=_snapshot_parts(run), writes=["features"]) as folder:
        seconds = prepare_features(TrainingPlan.load(folder), folder)
    return replace(run, features_seconds=round(seconds, 1))


def materialize_step(run: RunPayload) -> RunPayload:
    # the run's own features, published to the one online store
    with _work(run, reads=["features"]) as folder:
        rows = materialize(load_settings(), source=run_features(folder))["rows"]
    return replace(run, online_rows=dict(rows))


def candidates_step(run: RunPayload) -> RunPayload:
    with _work(run, reads=[*_snapshot_parts(run), "features"], writes=["stage"]) as folder:
        train_candidates(work_dir=folder, settings=load_settings())
    return run


def ranker_step(run: RunPayload) -> RunPayload:
    with _work(run, reads=["plan.json", "stage"], writes=["ranker"]) as folder:
        metrics = train_ranker(work_dir=folder)
    return replace(run, validation_ndcg=round(next(iter(metrics.values())), 4))


def register_step(run: RunPayload) -> RunPayload:
    """Register the challenger in the run's MLflow parent run (tags dag_id and run_id)."""
    with _work(run, reads=["plan.json", "ranker"]) as folder:
        out = register_challenger(
            work_dir=folder, settings=load_settings(), feature_seconds=run.features_seconds
        )
    return replace(run, version=out.version, model_uri=out.uri, mlflow_run_id=out.run_id)


def evaluate_step(run: RunPayload) -> RunPayload:
    """Evaluate the challenger against the champion; the summary is the review's body."""
    settings = load_settings()
    reads = run.reads(*_snapshot_parts(run))
    with _work(run, reads=reads, writes=["evaluation"]) as folder:
        result = evaluate(
            model_uri=run.model_uri,
            snapshot_uri=_snapshot(folder),
            settings=settings,
            cfg=_config(folder).evaluate,
            out_dir=folder / "evaluation",
        )
        summary = (result.out_dir / "summary.md").read_text()
        report = _link(run, folder, result.out_dir / "report.html")
    links = (
        f"\n\nReport: {report}\n"
        f"MLflow run: {run.mlflow_run_id} (experiment shopml-recommender, "
        f"tracking {redact(settings.mlflow_tracking_uri)})\n"
    )
    return replace(
        run,
        blessed=result.blessed,
        summary=summary + links,
        report=report,
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


PREPARED, SEARCH_MODEL_DIR, SEARCH_EVALUATION = (
    "search/prepared", "search/model", "search/evaluation",
)  # fmt: skip


def search_index_step(run: RunPayload) -> RunPayload:
    """Index the snapshot's catalog as of the training time and tune the first stage
    (``[search]`` of the run's config); saved to the run's ``search/prepared``."""
    from pipelines.search.model import prepare

    with _work(run, reads=run.reads(*_snapshot_parts(run)), writes=[PREPARED]) as folder:
        cfg = _config(folder).search.search
        prepare(_snapshot(folder), cfg).save(folder / PREPARED, overwrite=True)
    return run


def search_ranker_step(run: RunPayload) -> RunPayload:
    """Fit the search re-ranker on the prepared index; saved to the run's ``search/model``."""
    from pipelines.search.model import SearchModel, fit

    reads = run.reads(*_snapshot_parts(run), PREPARED)
    with _work(run, reads=reads, writes=[SEARCH_MODEL_DIR]) as folder:
        cfg = _config(folder).search.search
        model = fit(SearchModel.load(folder / PREPARED), _snapshot(folder), cfg)
        model.save(folder / SEARCH_MODEL_DIR, overwrite=True)
    return run


def search_register_step(run: RunPayload) -> RunPayload:
    """Register the run's search model as the next ``shopml-search`` challenger."""
    from pipelines.search.model import SearchModel

    with _work(run, reads=[SEARCH_MODEL_DIR]) as folder:
        out = register_search(SearchModel.load(folder / SEARCH_MODEL_DIR), settings=load_settings())
    return replace(run, search_version=out.version, search_model_uri=out.uri)


def search_evaluate_step(run: RunPayload) -> RunPayload:
    """Evaluate the search challenger against its champion; the summary is the body of
    the search approval request."""
    from pipelines.evaluation.search_eval import evaluate_search

    if not run.search_model_uri:
        raise ShopMLError("no search model in this run yet (register_search_challenger first)")
    settings = load_settings()
    reads = run.reads(*_snapshot_parts(run))
    with _work(run, reads=reads, writes=[SEARCH_EVALUATION]) as folder:
        result = evaluate_search(
            model_uri=run.search_model_uri,
            snapshot_uri=_snapshot(folder),
            settings=settings,
            cfg=_config(folder).search,
            out_dir=folder / SEARCH_EVALUATION,
        )
        summary = (result.out_dir / "summary.md").read_text()
        report = _link(run, folder, result.out_dir / "report.html")
    links = (
        f"\n\nReport: {report}\n"
        f"MLflow: {run.search_model_uri} (experiment shopml-search, "
        f"tracking {redact(settings.mlflow_tracking_uri)})\n"
    )
    return replace(
        run,
        search_blessed=result.blessed,
        search_summary=summary + links,
        search_report=report,
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
