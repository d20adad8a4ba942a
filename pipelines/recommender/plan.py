"""``shopml train``: snapshot -> validation -> features -> generators -> ranker -> MLflow.

The training time ``until`` (default: the start of the evaluation window, ``[evaluate]
holdout_days`` before the midnight after the last event) splits the snapshot: fold j (j = 1..folds) fits the generators on the events before
``until - j * label_days`` and labels the ranker's candidates with the events of the
``label_days`` that follow; the served generators are refitted on every event before
``until``. Features come from a feature build of the same snapshot, read point in time.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.candidates import CandidateConfig
from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import DAY, load_timeline
from pipelines.errors import ConfigError, ShopMLError
from pipelines.evaluation.evalset import EvalConfig
from pipelines.features.config import FeatureConfig
from pipelines.recommender.train import Fold, RankerConfig, TrainResult
from pipelines.settings import Settings, check_tables, config_section

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainOptions:
    """The ``[train]`` table: how many label windows the ranker learns from."""

    folds: int = 2

    def __post_init__(self) -> None:
        if self.folds < 1:
            raise ConfigError("train config: folds must be >= 1")


@dataclass(frozen=True)
class TrainConfig:
    train: TrainOptions = field(default_factory=TrainOptions)
    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    ranker: RankerConfig = field(default_factory=RankerConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    # its holdout_days: the default training time leaves the evaluation window unseen
    evaluate: EvalConfig = field(default_factory=EvalConfig)

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Tables ``[train]``, ``[candidates]``, ``[ranker]``, ``[features]`` and
        ``[evaluate]`` (its holdout_days); all optional, ``[gate]`` allowed."""
        check_tables(path)
        p = Path(path)
        return cls(
            train=config_section(TrainOptions, p, "train"),
            candidates=config_section(CandidateConfig, p, "candidates"),
            ranker=config_section(RankerConfig, p, "ranker"),
            features=config_section(FeatureConfig, p, "features"),
            evaluate=config_section(EvalConfig, p, "evaluate"),
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The inverse of :meth:`as_dict` (a plan passed between DAG tasks)."""
        return cls(
            train=TrainOptions(**d["train"]),
            candidates=CandidateConfig(**d["candidates"]),
            ranker=RankerConfig(**d["ranker"]),
            features=FeatureConfig(**d["features"]),
            evaluate=EvalConfig(**d["evaluate"]),
        )


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


def default_until(snap: Snapshot, holdout_days: float) -> datetime:
    """The start of the snapshot's evaluation window: ``holdout_days`` before the
    midnight after its last event, so ``shopml evaluate`` scores unseen interactions."""
    from pipelines.evaluation.evalset import window_start

    return window_start(snap, holdout_days)


@dataclass(frozen=True)
class Plan:
    """What the training steps agree on, written to ``work_dir/plan.json``."""

    snapshot_path: str
    snapshot_id: str
    until: datetime
    cutoffs: list[float]
    history_days: int
    config: dict[str, Any]

    def save(self, work_dir: Path) -> None:
        work_dir.mkdir(parents=True, exist_ok=True)
        body = {**asdict(self), "until": self.until.isoformat()}
        (work_dir / "plan.json").write_text(json.dumps(body, indent=2, default=str) + "\n")

    @classmethod
    def load(cls, work_dir: Path) -> Plan:
        path = work_dir / "plan.json"
        if not path.is_file():
            raise ShopMLError(f"{work_dir}: no training plan here (run train_candidates first)")
        body = json.loads(path.read_text())
        body["until"] = datetime.fromisoformat(body["until"])
        return cls(**body)

    @property
    def cfg(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)


def plan_training(snapshot: str | Path, cfg: TrainConfig, until: datetime | None = None) -> Plan:
    """Validate the snapshot (quarantined: refused) and fix the training time and folds."""
    from pipelines.validation.validate import ensure_validated

    snap = Snapshot.open(snapshot)
    ensure_validated(snap)
    if snap.rows("events") == 0:
        raise ShopMLError(
            f"snapshot {snap.path} has no events; nothing to learn recommendations from"
        )
    until = (until or default_until(snap, cfg.evaluate.holdout_days)).astimezone(UTC)
    now = until.timestamp()
    label_s = cfg.ranker.label_days * DAY
    cutoffs = [now - j * label_s for j in range(1, cfg.train.folds + 1)]
    first = _first_event(snap)
    if first is None or cutoffs[-1] <= first:
        span = 0.0 if first is None else (now - first) / DAY
        raise ShopMLError(
            f"the snapshot holds {span:.1f} days of events before {until:%Y-%m-%d %H:%M} UTC, "
            f"too few for {cfg.train.folds} label window(s) of {cfg.ranker.label_days:g} days; "
            "lower [ranker] label_days or [train] folds, or pass a later --train-until"
        )
    # The feature grid must reach back to the earliest fold's cutoff.
    history_days = int(np.ceil((now - cutoffs[-1]) / DAY)) + 1
    return Plan(str(snap.path), snap.id, until, cutoffs, history_days, cfg.as_dict())


def _first_event(snap: Snapshot) -> float | None:
    start = snap.manifest.get("event_time", {}).get("min")
    if not start:
        return None
    return datetime.fromisoformat(str(start).replace("Z", "+00:00")).timestamp()


def prepare_features(plan: Plan, settings: Settings) -> float:
    """Build the snapshot's features (grid reaching back to the earliest fold); seconds."""
    from pipelines.features.build import build_features

    cfg = plan.cfg
    fcfg = replace(cfg.features, history_days=max(cfg.features.history_days, plan.history_days))
    t0 = time.perf_counter()
    build_features(
        snapshot_uri=plan.snapshot_path,
        out_dir=settings.feature_store_dir,
        cfg=fcfg,
        as_of=plan.until,
    )
    return time.perf_counter() - t0


def train_candidates(
    *,
    work_dir: Path,
    settings: Settings,
    progress: Callable[[str, int, int], None] | None = None,
) -> Path:
    """Fit the candidate generators per fold and turn their candidates into the ranker's
    rows; refit them on all history before ``until``. Needs ``plan.json`` in ``work_dir``
    and the snapshot's features; writes ``work_dir/stage/``."""
    from pipelines.features.build import read_build
    from pipelines.recommender.bundle import FeatureSource
    from pipelines.recommender.train import candidate_stage

    plan = Plan.load(work_dir)
    cfg = plan.cfg
    try:
        built = read_build(settings.feature_store_dir)
    except ShopMLError:
        built = {}
    if built.get("snapshot_id") != plan.snapshot_id:
        raise ShopMLError(
            f"the feature store at {settings.feature_store_dir} holds no build of snapshot "
            f"{plan.snapshot_id[:12]}; build its features first (build_features)"
        )
    snap = Snapshot.open(plan.snapshot_path)
    tl = load_timeline(snap)
    now = plan.until.timestamp()
    label_s = cfg.ranker.label_days * DAY
    folds = [
        Fold(
            history=slice(0, tl.before(c)),
            now=c,
            label_events=slice(tl.before(c), tl.before(c + label_s)),
        )
        for c in plan.cutoffs
    ]
    stage = candidate_stage(
        tl,
        folds=folds,
        final=(slice(0, tl.before(now)), now),
        cand_cfg=cfg.candidates,
        ranker_cfg=cfg.ranker,
        source=FeatureSource(settings, text_dim=cfg.features.text_dim, seed=cfg.features.seed),
        progress=progress,
    )
    stage.save(work_dir / "stage")
    return work_dir / "stage"


def train_ranker(*, work_dir: Path) -> dict[str, float]:
    """Fit the LambdaMART ranker on ``work_dir/stage``; write ``work_dir/ranker/``
    (the booster, metrics, curves, importance); return the validation metrics."""
    from pipelines.recommender.train import CandidateStage, ranker_stage

    plan = Plan.load(work_dir)
    result = ranker_stage(CandidateStage.load(work_dir / "stage"), plan.cfg.ranker)
    out = work_dir / "ranker"
    out.mkdir(parents=True, exist_ok=True)
    result.recommender.booster.save_model(str(out / "ranker.txt"))
    (out / "result.json").write_text(
        json.dumps(
            {
                "metrics": result.metrics,
                "generator_metrics": result.generator_metrics,
                "curves": result.curves,
                "seconds": result.seconds,
            },
            indent=2,
        )
        + "\n"
    )
    result.importance.to_csv(out / "importance.csv", index=False)
    return result.metrics


def _load_result(work_dir: Path) -> TrainResult:
    import lightgbm as lgb
    import pandas as pd

    from pipelines.recommender.bundle import Recommender

    out = work_dir / "ranker"
    if not (out / "result.json").is_file():
        raise ShopMLError(f"{work_dir}: no trained ranker here (run train_ranker first)")
    body = json.loads((out / "result.json").read_text())
    served = Recommender.load(work_dir / "stage" / "served")
    served.booster = lgb.Booster(model_file=str(out / "ranker.txt"))
    return TrainResult(
        served,
        body["metrics"],
        body["generator_metrics"],
        body["curves"],
        pd.read_csv(out / "importance.csv"),
        body["seconds"],
    )


def register_challenger(
    *, work_dir: Path, settings: Settings, run_id: str | None = None, feature_seconds: float = 0.0
) -> TrainOutcome:
    """Log the trained bundle of ``work_dir`` to MLflow (a new parent run, or the run
    ``run_id`` a DAG opened), with a child run per generator and one for the ranker, and
    register it as the ``challenger``."""
    import mlflow

    from pipelines.registry.models import (
        MODEL_NAME,
        configure,
        flatten,
        log_bundle,
        run_tags,
        tag_version,
    )

    plan = Plan.load(work_dir)
    result = _load_result(work_dir)
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
        registered = log_bundle(rec, examples)
        tag_version(
            MODEL_NAME,
            registered.version,
            {
                "snapshot_id": plan.snapshot_id,
                "train_until": until.isoformat(),
                "feature_service": "recommender_ranker",
                **{f"metric.{k}": f"{v:.4f}" for k, v in result.metrics.items()},
            },
        )
    return TrainOutcome(
        snapshot_id=plan.snapshot_id,
        until=until,
        result=result,
        model_name=MODEL_NAME,
        version=registered.version,
        uri=f"models:/{MODEL_NAME}/{registered.version}",
        run_id=registered.run_id,
        seconds=0.0,
    )


def train(
    snapshot: str | Path,
    *,
    settings: Settings,
    cfg: TrainConfig | None = None,
    until: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TrainOutcome:
    """Every training step in one process (see the module docstring); the DAG runs the
    same steps as separate tasks."""
    started = time.perf_counter()
    plan = plan_training(snapshot, cfg or TrainConfig(), until)
    settings.home.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="shopml-train-", dir=settings.home) as tmp:
        work_dir = Path(tmp)
        plan.save(work_dir)
        feature_seconds = prepare_features(plan, settings)
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
