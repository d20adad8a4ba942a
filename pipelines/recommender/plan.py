"""The recommender's training as steps over a work folder, each runnable on its own (the
DAG runs them as tasks; :func:`pipelines.registry.challenger.train_challenger` runs them
all in one process for ``shopml train``):

1. :func:`plan_training` validates the snapshot and fixes the training time ``until``
   (default: the start of the evaluation window, ``[evaluate] holdout_days`` before the
   midnight after the last event) and the folds: fold j (j = 1..folds) fits the sources on
   the events before ``until - label_days - (j - 1) * fold_step_days`` (the step defaults
   to ``label_days``) and labels the ranker's candidates with the events of the
   ``label_days`` that follow; the plan goes to ``plan.json``.
2. :func:`prepare_features` builds the snapshot's feature tables into the run's own folder,
   point in time.
3. :func:`train_candidates` runs the candidate stage (``stage/``).
4. :func:`train_ranker` runs the ranker stage (``ranker/``: the trained bundle).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import DAY, holdout_window, load_timeline
from pipelines.errors import ShopMLError
from pipelines.features.build import build_features, read_build
from pipelines.io import read_json, write_json
from pipelines.recommender.bundle import FeatureSource
from pipelines.recommender.config import TrainConfig
from pipelines.recommender.train import CandidateStage, Fold, candidate_stage, ranker_stage
from pipelines.settings import Settings
from pipelines.validation.validate import ensure_validated

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingPlan:
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
        write_json(work_dir / "plan.json", body)

    @classmethod
    def load(cls, work_dir: Path) -> TrainingPlan:
        path = work_dir / "plan.json"
        if not path.is_file():
            raise ShopMLError(f"{work_dir}: no training plan here (run train_candidates first)")
        body = read_json(path)
        body["until"] = datetime.fromisoformat(body["until"])
        if not Path(body["snapshot_path"]).is_absolute():  # a copy inside the run's folder
            body["snapshot_path"] = str(work_dir / body["snapshot_path"])
        return cls(**body)

    @property
    def cfg(self) -> TrainConfig:
        return TrainConfig.from_dict(self.config)


def plan_training(
    snapshot: str | Path, cfg: TrainConfig, until: datetime | None = None
) -> TrainingPlan:
    """Validate the snapshot (quarantined: refused) and fix the training time and folds."""
    snap = Snapshot.open(snapshot)
    ensure_validated(snap)
    if snap.rows("events") == 0:
        raise ShopMLError(
            f"snapshot {snap.path} has no events; nothing to learn recommendations from"
        )
    until = (until or holdout_window(snap, cfg.holdout_days)[0]).astimezone(UTC)
    now = until.timestamp()
    label_s = cfg.ranker.label_days * DAY
    step_s = (cfg.train.fold_step_days or cfg.ranker.label_days) * DAY
    cutoffs = [now - label_s - j * step_s for j in range(cfg.train.folds)]
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
    return TrainingPlan(str(snap.path), snap.id, until, cutoffs, history_days, cfg.as_dict())


def _first_event(snap: Snapshot) -> float | None:
    start = snap.manifest.get("event_time", {}).get("min")
    if not start:
        return None
    return datetime.fromisoformat(str(start).replace("Z", "+00:00")).timestamp()


def run_features(work_dir: Path) -> Path:
    """The feature store folder of one training run: its own, so that runs on one home never
    read each other's features (the shared store under ``SHOPML_HOME`` is for
    ``shopml features build`` and serving)."""
    return work_dir / "features"


def prepare_features(plan: TrainingPlan, work_dir: Path) -> float:
    """Build the snapshot's features into the run's folder (:func:`run_features`), the grid
    reaching back to the earliest fold; returns seconds."""
    cfg = plan.cfg
    fcfg = replace(cfg.features, history_days=max(cfg.features.history_days, plan.history_days))
    t0 = time.perf_counter()
    build_features(
        snapshot_uri=plan.snapshot_path,
        out_dir=run_features(work_dir),
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
    plan = TrainingPlan.load(work_dir)
    cfg = plan.cfg
    try:
        built = read_build(run_features(work_dir))
    except ShopMLError:
        built = {}
    if built.get("snapshot_id") != plan.snapshot_id:
        raise ShopMLError(
            f"the run's feature store at {run_features(work_dir)} holds no build of snapshot "
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
        source=FeatureSource(
            replace(settings, feature_store_dir=run_features(work_dir)),
            text_dim=cfg.features.text_dim,
            seed=cfg.features.seed,
        ),
        progress=progress,
    )
    stage.save(work_dir / "stage")
    return work_dir / "stage"


def train_ranker(*, work_dir: Path) -> dict[str, float]:
    """Fit the LambdaMART ranker on ``work_dir/stage``; write the trained result to
    ``work_dir/ranker/`` (:meth:`TrainResult.save`); return the validation metrics."""
    plan = TrainingPlan.load(work_dir)
    result = ranker_stage(CandidateStage.load(work_dir / "stage"), plan.cfg.ranker)
    result.save(work_dir / "ranker")
    return result.metrics
