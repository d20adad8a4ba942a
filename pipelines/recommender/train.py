"""Two-stage training: candidate generators, then a LightGBM LambdaMART re-ranker.

Stage A fits every generator on the events before a cutoff ``c`` and asks for candidates
for users active in the label window after ``c``; each candidate is labelled with the
user's strongest next interaction with it (purchase 3 > add_to_cart 2 > view or
search_click 1 > none 0, configurable). Features come from stage A's history and the
feature store at ``c`` only, so no label event can leak into a feature. A LambdaMART
ranker learns on 80 % of those users and early-stops on the rest.

Stage B refits the generators on everything up to the training time and keeps the ranker:
the bundle served is fresh, the ranker has learned how to weigh the sources.

The same code runs the random per-user splits of the MovieLens protocol: the stages then
differ by an event mask instead of a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.candidates import CandidateConfig
from pipelines.data.timeline import Timeline
from pipelines.errors import ShopMLError
from pipelines.io import read_json, write_json
from pipelines.ranking.lambdamart import fit_lambdamart, importance
from pipelines.ranking.metrics import ranking_metrics
from pipelines.recommender.bundle import FeatureSource, Recommender, fit_generators, item_side
from pipelines.recommender.config import RankerConfig
from pipelines.recommender.labels import Labels, RankerData, ranker_rows
from pipelines.recommender.predict import RecommendRequest
from pipelines.recommender.rows import CATEGORICAL

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """The trained recommender (served generators + ranker) and what its training
    measured: validation metrics, each source's metrics, learning curves, importance."""

    recommender: Recommender
    metrics: dict[str, float]
    generator_metrics: dict[str, dict[str, float]]
    curves: dict[str, list[float]]
    importance: pd.DataFrame
    seconds: dict[str, float]

    def save(self, folder: Path) -> None:
        """The bundle under ``folder/bundle`` and the measurements beside it;
        ``result.json`` last, so a folder with it is complete."""
        folder.mkdir(parents=True, exist_ok=True)
        self.recommender.save(folder / "bundle")
        self.importance.to_csv(folder / "importance.csv", index=False)
        write_json(
            folder / "result.json",
            {
                "metrics": self.metrics,
                "generator_metrics": self.generator_metrics,
                "curves": self.curves,
                "seconds": self.seconds,
            },
        )

    @classmethod
    def load(cls, folder: Path) -> TrainResult:
        if not (folder / "result.json").is_file():
            raise ShopMLError(f"{folder}: no trained ranker here (run train_ranker first)")
        body = read_json(folder / "result.json")
        return cls(
            Recommender.load(folder / "bundle"),
            body["metrics"],
            body["generator_metrics"],
            body["curves"],
            pd.read_csv(folder / "importance.csv"),
            body["seconds"],
        )


@dataclass
class Fold:
    """One stage-A fit: generators see ``history`` (events as of ``now``), labels come
    from ``label_events``."""

    history: np.ndarray | slice
    now: float
    label_events: np.ndarray | slice


def _concat(parts: list[RankerData]) -> RankerData:
    return RankerData(
        x=np.vstack([p.x for p in parts]),
        y=np.concatenate([p.y for p in parts]),
        groups=np.concatenate([p.groups for p in parts]),
        users=np.concatenate([p.users for p in parts]),
        source_lists=parts[-1].source_lists,
        candidate_recall=float(np.mean([p.candidate_recall for p in parts])),
    )


@dataclass
class CandidateStage:
    """Everything the ranker step needs, from the candidate step: the ranker's training
    and validation rows, the latest fold's recommender with its validation users and their
    truth (to compare the ranker with each source), and the served generators."""

    train: RankerData
    valid: RankerData
    latest_valid: RankerData  # the latest fold's validation rows (per-source top lists)
    probe: Recommender  # the latest fold's generators, no ranker yet
    probe_truth: pd.DataFrame
    probe_users: np.ndarray  # user ids
    served: Recommender  # generators refitted on the final history, no ranker yet
    seconds: dict[str, float]

    def save(self, folder: Path) -> None:
        """Write the stage into ``folder`` (the work folder a DAG passes between tasks)."""
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("train", "valid", "latest_valid"):
            data: RankerData = getattr(self, name)
            np.savez(
                folder / f"{name}.npz", x=data.x, y=data.y, groups=data.groups, users=data.users
            )
            data.source_lists.to_parquet(folder / f"{name}_lists.parquet", index=False)
            write_json(folder / f"{name}.json", {"candidate_recall": data.candidate_recall})
        self.probe.save(folder / "probe")
        self.served.save(folder / "served")
        self.probe_truth.to_parquet(folder / "probe_truth.parquet", index=False)
        pd.DataFrame({"user_id": self.probe_users}).to_parquet(
            folder / "probe_users.parquet", index=False
        )
        write_json(folder / "seconds.json", self.seconds)  # last: the stage is complete

    @classmethod
    def load(cls, folder: Path) -> CandidateStage:
        if not (folder / "seconds.json").is_file():
            raise ShopMLError(f"{folder}: no candidate stage here (run train_candidates first)")
        parts = {}
        for name in ("train", "valid", "latest_valid"):
            with np.load(folder / f"{name}.npz") as a:
                arrays = {k: a[k] for k in a.files}
            parts[name] = RankerData(
                x=arrays["x"], y=arrays["y"], groups=arrays["groups"], users=arrays["users"],
                source_lists=pd.read_parquet(folder / f"{name}_lists.parquet"),
                candidate_recall=float(read_json(folder / f"{name}.json")["candidate_recall"]),
            )  # fmt: skip
        return cls(
            train=parts["train"],
            valid=parts["valid"],
            latest_valid=parts["latest_valid"],
            probe=Recommender.load(folder / "probe"),
            probe_truth=pd.read_parquet(folder / "probe_truth.parquet"),
            probe_users=pd.read_parquet(folder / "probe_users.parquet")["user_id"].to_numpy(
                dtype=object
            ),
            served=Recommender.load(folder / "served"),
            seconds=dict(read_json(folder / "seconds.json")),
        )


def candidate_stage(
    tl: Timeline,
    *,
    folds: list[Fold],
    final: tuple[np.ndarray | slice, float],
    cand_cfg: CandidateConfig,
    ranker_cfg: RankerConfig,
    source: FeatureSource,
    progress: Callable[[str, int, int], None] | None = None,
) -> CandidateStage:
    """Fit generators on each fold's history and turn their candidates, labelled by the
    fold's label events, into ranker rows; refit the generators on ``final``."""
    if not folds:
        raise ValueError("need at least one fold")
    seconds: dict[str, float] = {"generators_stage_a": 0.0, "ranker_rows": 0.0}
    items = item_side(tl)
    genders = np.sort(pd.Series(tl.users["gender"]).dropna().astype(str).unique()).astype(str)
    rng = np.random.default_rng(ranker_cfg.seed)
    is_valid = rng.random(tl.n_users) < ranker_cfg.validation_share
    trains, valids = [], []

    def step(name: str, total: int) -> Callable[[int], None] | None:
        return None if progress is None else (lambda done: progress(name, done, total))

    for f, fold in enumerate(folds, start=1):
        t0 = time.perf_counter()
        ctx_a, store_a, gens_a = fit_generators(tl, fold.history, fold.now, cand_cfg, source)
        seconds["generators_stage_a"] += time.perf_counter() - t0
        rec_a = Recommender(ctx_a, items, genders, store_a, gens_a)
        labels = Labels.from_events(tl, fold.label_events, ranker_cfg.grades)
        users = rng.permutation(labels.users())[: ranker_cfg.max_users]
        train_users, valid_users = np.sort(users[~is_valid[users]]), np.sort(users[is_valid[users]])
        if not len(train_users) or not len(valid_users):
            raise ShopMLError(
                f"fold {f}: {len(train_users)} training and {len(valid_users)} validation users "
                "have events in the label window; use more data or a longer label window"
            )
        log.info(
            "fold %d/%d: %s training and %s validation users with label events",
            f, len(folds), f"{len(train_users):,}", f"{len(valid_users):,}",
        )  # fmt: skip
        t0 = time.perf_counter()
        trains.append(
            ranker_rows(
                rec_a, train_users, labels, ranker_cfg.batch_users, ranker_cfg.eval_at,
                step(f"fold {f}: ranker rows (train)", len(train_users)),
                negatives=ranker_cfg.negatives_per_user, seed=ranker_cfg.seed + f,
            )
        )  # fmt: skip
        valids.append(
            ranker_rows(
                rec_a, valid_users, labels, ranker_cfg.batch_users, ranker_cfg.eval_at,
                step(f"fold {f}: ranker rows (validation)", len(valid_users)),
                negatives=ranker_cfg.negatives_per_user, seed=ranker_cfg.seed + 100 + f,
            )
        )  # fmt: skip
        seconds["ranker_rows"] += time.perf_counter() - t0
        if f == 1:  # the first fold is the latest window: it gives the comparison below
            probe = (rec_a, labels, valid_users)
    rec_p, labels_p, valid_p = probe
    t0 = time.perf_counter()
    ctx_b, store_b, gens_b = fit_generators(tl, final[0], final[1], cand_cfg, source)
    seconds["generators_final"] = time.perf_counter() - t0
    return CandidateStage(
        train=_concat(trains),
        valid=_concat(valids),
        latest_valid=valids[0],
        probe=rec_p,
        probe_truth=labels_p.truth(rec_p.ctx.user_ids, rec_p.ctx.item_ids, valid_p),
        probe_users=rec_p.ctx.user_ids[valid_p],
        served=Recommender(ctx_b, items, genders, store_b, gens_b),
        seconds=seconds,
    )


def ranker_stage(stage: CandidateStage, ranker_cfg: RankerConfig) -> TrainResult:
    """Fit the LambdaMART ranker on the stage's rows; compare it with each source on the
    latest fold's validation users (held out of the ranker's training rows, though they
    steered its early stopping) against every item they went on to touch."""
    seconds = dict(stage.seconds)
    names = stage.probe.feature_names
    t0 = time.perf_counter()
    if not len(stage.train.groups) or not len(stage.valid.groups):
        raise ShopMLError(
            "too few users with a positive candidate to train the ranker "
            f"({len(stage.train.groups)} train, {len(stage.valid.groups)} validation); "
            "use more data or a longer label window"
        )
    booster, curves = fit_lambdamart(
        stage.train, stage.valid, names, ranker_cfg, categorical=CATEGORICAL
    )
    seconds["ranker_fit"] = time.perf_counter() - t0
    k = ranker_cfg.eval_at
    generator_metrics = {
        str(name): ranking_metrics(group, stage.probe_truth, k)
        for name, group in stage.latest_valid.source_lists.groupby("source")
    }
    stage.probe.booster = booster
    reranked = stage.probe.recommend(RecommendRequest(list(stage.probe_users), k))
    metrics = {f"{m}_at_{k}": v for m, v in ranking_metrics(reranked, stage.probe_truth, k).items()}
    metrics["candidate_recall"] = stage.latest_valid.candidate_recall
    metrics["best_iteration"] = float(booster.best_iteration)
    metrics["train_rows"] = float(len(stage.train.y))
    metrics["train_groups"] = float(len(stage.train.groups))
    metrics["validation_users"] = float(len(stage.probe_users))
    stage.served.booster = booster
    return TrainResult(
        stage.served, metrics, generator_metrics, curves, importance(booster, names), seconds
    )
