"""``shopml train``: snapshot -> validation -> features -> generators -> ranker -> MLflow.

The training time ``until`` (default: the start of the evaluation window, ``[evaluate]
holdout_days`` before the midnight after the last event) splits the snapshot: fold j (j = 1..folds) fits the generators on the events before
``until - j * label_days`` and labels the ranker's candidates with the events of the
``label_days`` that follow; the served generators are refitted on every event before
``until``. Features come from a feature build of the same snapshot, read point in time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.candidates import CandidateConfig
from pipelines.errors import ConfigError, ShopMLError
from pipelines.evalset import EvalConfig
from pipelines.features.config import FeatureConfig
from pipelines.features.timeline import DAY, load_timeline
from pipelines.settings import Settings, check_tables, config_section
from pipelines.snapshot import Snapshot
from pipelines.train_ranker import Fold, RankerConfig, TrainResult, train_two_stage

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
    from pipelines.evalset import window_start

    return window_start(snap, holdout_days)


def train(
    snapshot: str | Path,
    *,
    settings: Settings,
    cfg: TrainConfig | None = None,
    until: datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> TrainOutcome:
    """Train, log and register a recommender on ``snapshot`` (see the module docstring)."""
    from pipelines.features.build import build_features
    from pipelines.recommender import FeatureSource
    from pipelines.registry import (
        MODEL_NAME,
        configure,
        flatten,
        log_bundle,
        run_tags,
        tag_version,
    )
    from pipelines.validate import ensure_validated

    started = time.perf_counter()
    cfg = cfg or TrainConfig()
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

    tl = load_timeline(snap)
    first = float(tl.ts[0]) if len(tl.ts) else now
    if cutoffs[-1] <= first:
        span = (now - first) / DAY
        raise ShopMLError(
            f"the snapshot holds {span:.1f} days of events before {until:%Y-%m-%d %H:%M} UTC, "
            f"too few for {cfg.train.folds} label window(s) of {cfg.ranker.label_days:g} days; "
            "lower [ranker] label_days or [train] folds, or pass a later --train-until"
        )
    # The feature grid must reach back to the earliest fold's cutoff.
    history_days = int(np.ceil((now - cutoffs[-1]) / DAY)) + 1
    fcfg = replace(cfg.features, history_days=max(cfg.features.history_days, history_days))
    t0 = time.perf_counter()
    build_features(
        snapshot_uri=snap.path, out_dir=settings.feature_store_dir, cfg=fcfg, as_of=until
    )
    feature_seconds = time.perf_counter() - t0

    folds = [
        Fold(
            history=slice(0, tl.before(c)),
            now=c,
            label_events=slice(tl.before(c), tl.before(c + label_s)),
        )
        for c in cutoffs
    ]
    import mlflow

    configure(settings)
    config = cfg.as_dict()
    tags = run_tags(snap.id, config)
    with mlflow.start_run(run_name=f"train {snap.id[:12]} until {until:%Y-%m-%d}", tags=tags):
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource  # type: ignore[attr-defined]

        mlflow.log_input(
            MetaDataset(  # type: ignore[abstract]
                source=LocalArtifactDatasetSource(str(snap.path)),
                name=f"snapshot-{snap.id[:12]}",
                digest=snap.id[:36],
            ),
            context="training",
            tags={"snapshot_id": snap.id},
        )
        mlflow.log_params({k: str(v)[:500] for k, v in flatten("", config).items()})
        mlflow.log_params({"train_until": until.isoformat(), "snapshot_path": str(snap.path)})

        result = train_two_stage(
            tl,
            folds=folds,
            final=(slice(0, tl.before(now)), now),
            cand_cfg=cfg.candidates,
            ranker_cfg=cfg.ranker,
            source=FeatureSource(settings, text_dim=cfg.features.text_dim, seed=cfg.features.seed),
            progress=progress,
        )
        _log_children(mlflow, result, tags)
        timings = {
            "features_seconds": feature_seconds,
            **{f"{k}_seconds": v for k, v in result.seconds.items()},
        }
        mlflow.log_metrics({**result.metrics, **timings})
        rec = result.recommender
        rec.config = config
        rec.meta = {
            "snapshot_id": snap.id,
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
                "snapshot_id": snap.id,
                "train_until": until.isoformat(),
                "feature_service": "recommender_ranker",
                **{f"metric.{k}": f"{v:.4f}" for k, v in result.metrics.items()},
            },
        )
    return TrainOutcome(
        snapshot_id=snap.id,
        until=until,
        result=result,
        model_name=MODEL_NAME,
        version=registered.version,
        uri=f"models:/{MODEL_NAME}/{registered.version}",
        run_id=registered.run_id,
        seconds=time.perf_counter() - started,
    )


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
