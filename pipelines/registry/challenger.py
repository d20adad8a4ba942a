"""Registering challengers: a trained work folder becomes an MLflow run and a model version.

:func:`register_challenger` logs the trained bundle of a work folder (the DAG's
``register_challenger`` task); :func:`train_challenger` is ``shopml train``: every step
of :mod:`pipelines.recommender.plan` in one process, then the registration.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.recommender.config import TrainConfig
from pipelines.recommender.plan import (
    TrainingPlan,
    plan_training,
    prepare_features,
    train_candidates,
    train_ranker,
)
from pipelines.recommender.train import TrainResult
from pipelines.registry.models import MODEL_NAME, log_bundle, registered_name, tag_version
from pipelines.registry.tracking import configure, flatten, mlflow_module, run_tags
from pipelines.settings import Settings


@dataclass(frozen=True)
class TrainOutcome:
    snapshot_id: str
    until: datetime
    result: TrainResult
    model_name: str
    version: int
    uri: str
    run_id: str
    seconds: float


def register_challenger(
    *, work_dir: Path, settings: Settings, run_id: str | None = None, feature_seconds: float = 0.0
) -> TrainOutcome:
    """Log the trained bundle of ``work_dir`` to MLflow (a new parent run, or the run
    ``run_id`` a DAG opened), with a child run per generator and one for the ranker, and
    register it as the ``challenger``."""
    mlflow = mlflow_module()
    plan = TrainingPlan.load(work_dir)
    result = TrainResult.load(work_dir / "ranker")
    until = plan.until
    configure(settings)
    config = plan.config
    tags = run_tags(plan.snapshot_id, config)
    run_name = f"train {plan.snapshot_id[:12]} until {until:%Y-%m-%d}"
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else run_name, tags=tags):
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

        mlflow.log_input(
            MetaDataset(  # type: ignore[abstract]
                source=LocalArtifactDatasetSource(plan.snapshot_path),
                name=f"snapshot-{plan.snapshot_id[:12]}",
                digest=plan.snapshot_id[:36],
            ),
            context="training",
            tags={"snapshot_id": plan.snapshot_id},
        )
        mlflow.log_params({k: str(v)[:500] for k, v in flatten("", config).items()})
        mlflow.log_params({"train_until": until.isoformat(), "snapshot_path": plan.snapshot_path})
        _log_children(mlflow, result, tags)
        timings = {
            "features_seconds": feature_seconds,
            **{f"{k}_seconds": v for k, v in result.seconds.items()},
        }
        mlflow.log_metrics({**result.metrics, **timings})
        rec = result.recommender
        rec.config = config
        rec.meta = {
            "snapshot_id": plan.snapshot_id,
            "train_until": until.isoformat(),
            "metrics": result.metrics,
            "feature_service": "recommender_ranker",
        }
        active = np.flatnonzero(rec.ctx.history.user_events > 0)[:5]
        examples = [str(u) for u in rec.ctx.user_ids[active]] or [str(rec.ctx.user_ids[0])]
        registered = log_bundle(rec, examples, register_as=registered_name(MODEL_NAME, settings))
        tag_version(
            registered.name,
            registered.version,
            {
                "snapshot_id": plan.snapshot_id,
                "train_until": until.isoformat(),
                "feature_service": "recommender_ranker",
                # whether training the same plan again gives this model (docs/recommendation.md)
                "training.repeatable": str(plan.cfg.candidates.repeatable).lower(),
                **{f"metric.{k}": f"{v:.4f}" for k, v in result.metrics.items()},
            },
        )
    return TrainOutcome(
        snapshot_id=plan.snapshot_id,
        until=until,
        result=result,
        model_name=registered.name,
        version=registered.version,
        uri=registered.uri,
        run_id=registered.run_id,
        seconds=0.0,
    )


def train_challenger(
    snapshot: str | Path,
    *,
    settings: Settings,
    cfg: TrainConfig | None = None,
    until: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TrainOutcome:
    """``shopml train``: every training step in one process, in a temporary work folder
    under ``settings.home`` (the DAG runs the same steps as tasks), then
    :func:`register_challenger`."""
    started = time.perf_counter()
    plan = plan_training(snapshot, cfg or TrainConfig(), until)
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shopml-train-", dir=settings.home) as tmp:
        work_dir = Path(tmp)
        plan.save(work_dir)
        feature_seconds = prepare_features(plan, work_dir)
        train_candidates(work_dir=work_dir, settings=settings, progress=progress)
        train_ranker(work_dir=work_dir)
        outcome = register_challenger(
            work_dir=work_dir, settings=settings, feature_seconds=feature_seconds
        )
    return replace(outcome, seconds=time.perf_counter() - started)


def _log_children(mlflow: Any, result: TrainResult, tags: dict[str, str]) -> None:
    """Per-generator metrics (their own top lists on the validation users) and the
    ranker's parameters, learning curves and feature importance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, gen in result.recommender.generators.items():
        with mlflow.start_run(run_name=name, nested=True, tags={**tags, "shopml.step": name}):
            prefixes: tuple[str, ...] = {
                "als": ("als_",),
                "bpr": ("bpr_",),
                "itemitem": ("ease_", "knn_"),
            }.get(name, ())
            params: dict[str, Any] = {
                k: v for k, v in asdict(gen.cfg).items() if prefixes and k.startswith(prefixes)
            }
            params["candidates"] = gen.cfg.per_source.get(name, 0)
            if name == "itemitem":
                params["method"] = getattr(gen, "method", "")
            mlflow.log_params(params)
            metrics = {f"{m}_at_k": v for m, v in result.generator_metrics.get(name, {}).items()}
            mlflow.log_metrics({**metrics, "fit_seconds": gen.fit_seconds})
    with mlflow.start_run(run_name="ranker", nested=True, tags={**tags, "shopml.step": "ranker"}):
        for split, values in result.curves.items():
            for step, value in enumerate(values):
                mlflow.log_metric(f"{split}_ndcg", value, step=step)
        mlflow.log_metrics(result.metrics)
        top = result.importance.head(25).iloc[::-1]
        fig, ax = plt.subplots(figsize=(7, 7))
        ax.barh(top["feature"], top["gain"])
        ax.set_xlabel("total gain")
        ax.set_title("LightGBM feature importance")
        fig.tight_layout()
        mlflow.log_figure(fig, "feature_importance.png")
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        for split, values in result.curves.items():
            ax.plot(values, label=split)
        ax.set_xlabel("boosting round")
        ax.set_ylabel("nDCG")
        ax.legend()
        fig.tight_layout()
        mlflow.log_figure(fig, "learning_curve.png")
        plt.close(fig)
        mlflow.log_text(result.importance.to_csv(index=False), "feature_importance.csv")
