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

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.candidates import CandidateConfig
from pipelines.data.contract import DEFAULT_GRADES, EVENT_TYPES
from pipelines.data.timeline import Timeline
from pipelines.errors import ShopMLError, require_all
from pipelines.evaluation.metrics import ranking_metrics
from pipelines.recommender.bundle import FeatureSource, Recommender, fit_generators, item_side
from pipelines.recommender.rows import CATEGORICAL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RankerConfig:
    """The label window, the training sample and the LightGBM parameters."""

    label_days: float = 14.0
    grades: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_GRADES))
    max_users: int = 10_000  # users sampled per fold for ranker training (train + validation)
    negatives_per_user: int = (
        50  # unlabelled candidates kept per training user (all positives stay)
    )
    validation_share: float = 0.2
    num_leaves: int = 31
    learning_rate: float = 0.05
    max_rounds: int = 400
    early_stopping_rounds: int = 40
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    eval_at: int = 10
    batch_users: int = 500
    seed: int = 0

    def __post_init__(self) -> None:
        checks = [
            (self.label_days > 0, "label_days must be > 0"),
            (set(self.grades) == set(EVENT_TYPES), f"grades needs exactly {sorted(EVENT_TYPES)}"),
            (all(0 <= g <= 30 for g in self.grades.values()), "grades must be in 0..30"),
            (self.max_users >= 10, "max_users must be >= 10"),
            (self.negatives_per_user >= 1, "negatives_per_user must be >= 1"),
            (0 < self.validation_share < 1, "validation_share must be in (0, 1)"),
            (self.num_leaves >= 2, "num_leaves must be >= 2"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.max_rounds >= 1, "max_rounds must be >= 1"),
            (self.eval_at >= 1, "eval_at must be >= 1"),
            (self.batch_users >= 1, "batch_users must be >= 1"),
        ]
        require_all(checks, context="ranker config")


@dataclass
class Labels:
    """Each (user, item)'s grade from the label events, as sorted keys user * n_items + item."""

    keys: np.ndarray
    grades: np.ndarray
    n_items: int

    @classmethod
    def from_events(
        cls, tl: Timeline, selected: np.ndarray | slice, grades: dict[str, int]
    ) -> Labels:
        grade_of = np.array([grades[t] for t in EVENT_TYPES], dtype=np.int8)
        key = tl.user[selected].astype(np.int64) * tl.n_items + tl.item[selected]
        g = grade_of[tl.etype[selected]]
        frame = pd.DataFrame({"k": key, "g": g}).groupby("k", sort=True)["g"].max()
        return cls(frame.index.to_numpy(np.int64), frame.to_numpy(np.int8), tl.n_items)

    def users(self) -> np.ndarray:
        """User codes with at least one graded event."""
        return np.unique(self.keys[self.grades > 0] // self.n_items)

    def of(self, user_codes: np.ndarray, items: np.ndarray) -> np.ndarray:
        key = user_codes.astype(np.int64) * self.n_items + items
        at = np.clip(np.searchsorted(self.keys, key), 0, max(len(self.keys) - 1, 0))
        if not len(self.keys):
            return np.zeros(len(key), dtype=np.int8)
        return np.where(self.keys[at] == key, self.grades[at], 0).astype(np.int8)

    def truth(
        self, user_ids: np.ndarray, item_ids: np.ndarray, users: np.ndarray, *, graded: bool = False
    ) -> pd.DataFrame:
        """The truth of ``users`` for the metric functions: every graded item, binary or
        with its grade as ``relevance``."""
        sel = np.isin(self.keys // self.n_items, users) & (self.grades > 0)
        k = self.keys[sel]
        out = pd.DataFrame(
            {"user_id": user_ids[k // self.n_items], "item_id": item_ids[k % self.n_items]}
        )
        if graded:
            out["relevance"] = self.grades[sel].astype(float)
        return out


@dataclass
class RankerData:
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray  # rows per user, in order
    users: np.ndarray  # user code per group
    source_lists: pd.DataFrame  # user_id, rank, item_id, source: each source's top list
    candidate_recall: float  # share of label positives that made it into the candidates


def ranker_rows(
    rec: Recommender,
    users: np.ndarray,
    labels: Labels,
    batch_users: int,
    eval_at: int,
    progress: Callable[[int], None] | None = None,
    *,
    negatives: int | None = None,
    seed: int = 0,
) -> RankerData:
    """Candidates, features and labels for ``users`` (codes); users without a positive
    candidate are left out (they carry no ranking signal). With ``negatives``, each user
    keeps every positive candidate and at most that many of the others, at random."""
    rng = np.random.default_rng(seed)
    xs, ys, groups, kept, lists = [], [], [], [], []
    found = positives = 0
    user_ids = rec.ctx.user_ids
    for lo in range(0, len(users), batch_users):
        codes = users[lo : lo + batch_users]
        batch = rec.ctx.batch(user_ids[codes])
        cands, x = rec.rows_for(batch)
        y = labels.of(codes[cands.pos], cands.item)
        per_user_pos = np.bincount(cands.pos[y > 0], minlength=len(codes))
        found += int((y > 0).sum())
        positives += int(np.isin(labels.keys[labels.grades > 0] // labels.n_items, codes).sum())
        keep_user = per_user_pos > 0
        keep = keep_user[cands.pos]
        if negatives is not None:  # every positive, and a random sample of the rest
            noise = rng.random(len(y))
            neg = y == 0
            order = np.lexsort(
                (noise, ~neg, cands.pos)
            )  # per user: negatives in random order first
            first_of_user = np.searchsorted(cands.pos[order], cands.pos[order], side="left")
            rank = np.empty(len(y), dtype=np.int64)
            rank[order] = np.arange(len(y)) - first_of_user
            keep &= ~neg | (rank < negatives)
        xs.append(x[keep])
        ys.append(y[keep])
        groups.append(np.bincount(cands.pos[keep], minlength=len(codes))[keep_user])
        kept.append(codes[keep_user])
        for s, name in enumerate(rec.sources):
            r = cands.ranks[:, s]
            top = np.isfinite(r) & (r <= eval_at)
            lists.append(
                pd.DataFrame(
                    {
                        "user_id": user_ids[codes[cands.pos[top]]],
                        "rank": r[top].astype(int),
                        "item_id": rec.ctx.item_ids[cands.item[top]],
                        "source": name,
                    }
                )
            )
        if progress is not None:
            progress(min(lo + batch_users, len(users)))
    return RankerData(
        x=np.vstack(xs) if xs else np.empty((0, len(rec.feature_names)), np.float32),
        y=np.concatenate(ys) if ys else np.empty(0, np.int8),
        groups=np.concatenate(groups) if groups else np.empty(0, np.int64),
        users=np.concatenate(kept) if kept else np.empty(0, np.int64),
        source_lists=pd.concat(lists, ignore_index=True) if lists else pd.DataFrame(),
        candidate_recall=found / max(positives, 1),
    )


def fit_ranker(
    train: RankerData, valid: RankerData, names: list[str], cfg: RankerConfig
) -> tuple[Any, dict[str, list[float]]]:
    """LightGBM lambdarank with early stopping on ``valid``; returns (booster, curves)."""
    import lightgbm as lgb

    if not len(train.groups) or not len(valid.groups):
        raise ShopMLError(
            "too few users with a positive candidate to train the ranker "
            f"({len(train.groups)} train, {len(valid.groups)} validation); "
            "use more data or a longer label window"
        )
    categorical = [names.index(c) for c in CATEGORICAL if c in names]
    params = {
        "objective": "lambdarank",
        "metric": "ndcg",
        "ndcg_eval_at": [cfg.eval_at],
        "num_leaves": cfg.num_leaves,
        "learning_rate": cfg.learning_rate,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "seed": cfg.seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbosity": -1,
    }
    dtrain = lgb.Dataset(
        train.x, train.y, group=train.groups, feature_name=names, categorical_feature=categorical,
        free_raw_data=False,
    )  # fmt: skip
    dvalid = lgb.Dataset(valid.x, valid.y, group=valid.groups, reference=dtrain)
    curves: dict[str, Any] = {}
    booster = lgb.train(
        params,
        dtrain,
        num_boost_round=cfg.max_rounds,
        valid_sets=[dtrain, dvalid],
        valid_names=["train", "validation"],
        callbacks=[
            lgb.early_stopping(cfg.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(curves),
        ],
    )
    key = f"ndcg@{cfg.eval_at}"
    return booster, {
        "train": list(curves["train"][key]),
        "validation": list(curves["validation"][key]),
    }


@dataclass
class TrainResult:
    recommender: Recommender
    metrics: dict[str, float]
    generator_metrics: dict[str, dict[str, float]]
    curves: dict[str, list[float]]
    importance: pd.DataFrame
    seconds: dict[str, float]


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
            (folder / f"{name}.json").write_text(
                json.dumps({"candidate_recall": data.candidate_recall})
            )
        self.probe.save(folder / "probe")
        self.served.save(folder / "served")
        self.probe_truth.to_parquet(folder / "probe_truth.parquet", index=False)
        pd.DataFrame({"user_id": self.probe_users}).to_parquet(
            folder / "probe_users.parquet", index=False
        )
        (folder / "seconds.json").write_text(json.dumps(self.seconds))

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
                candidate_recall=float(json.loads((folder / f"{name}.json").read_text())["candidate_recall"]),
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
            seconds=dict(json.loads((folder / "seconds.json").read_text())),
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
    booster, curves = fit_ranker(stage.train, stage.valid, names, ranker_cfg)
    seconds["ranker_fit"] = time.perf_counter() - t0
    k = ranker_cfg.eval_at
    generator_metrics = {
        str(name): ranking_metrics(group, stage.probe_truth, k)
        for name, group in stage.latest_valid.source_lists.groupby("source")
    }
    stage.probe.booster = booster
    reranked = stage.probe.recommend(list(stage.probe_users), k)
    metrics = {f"{m}_at_{k}": v for m, v in ranking_metrics(reranked, stage.probe_truth, k).items()}
    metrics["candidate_recall"] = stage.latest_valid.candidate_recall
    metrics["best_iteration"] = float(booster.best_iteration)
    metrics["train_rows"] = float(len(stage.train.y))
    metrics["train_groups"] = float(len(stage.train.groups))
    metrics["validation_users"] = float(len(stage.probe_users))
    stage.served.booster = booster
    importance = pd.DataFrame(
        {
            "feature": names,
            "gain": booster.feature_importance("gain"),
            "splits": booster.feature_importance("split"),
        }
    ).sort_values("gain", ascending=False, ignore_index=True)
    return TrainResult(stage.served, metrics, generator_metrics, curves, importance, seconds)
