"""LightGBM LambdaMART: fit with early stopping, predict, contributions, importance.

The rows of one query (a shopper asking for recommendations, a search query) are a
group; ``groups`` holds the number of rows of each group in row order. Labels are graded
relevance (0 = not relevant). The same code fits the recommender's and the search
re-ranker; each model brings its own rows, labels and reasons.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd

from pipelines.ranking.compiled import compiled

# LightGBM's pred_contrib is not safe across threads sharing one booster.
_CONTRIB_LOCK = threading.Lock()


class Grouped(Protocol):
    """Ranker rows: features ``x``, graded labels ``y``, rows per group ``groups``."""

    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


@dataclass(frozen=True)
class LambdaMARTConfig:
    """The LightGBM parameters of a LambdaMART re-ranker (docs/recommendation.md)."""

    num_leaves: int = 31
    learning_rate: float = 0.05
    max_rounds: int = 400
    early_stopping_rounds: int = 40
    # Keep at least this many rounds when the validation peaks earlier: on a small shop the
    # validation users are few and their nDCG noisy, and a peak after a handful of rounds
    # is noise, not the best model (0: trust early stopping)
    min_rounds: int = 0
    # Once the rounds are chosen, train again on the training and validation groups
    # together for that many rounds: with a few hundred labelled queries the fifth held
    # out for early stopping is data the final model should not go without
    refit: bool = False
    min_data_in_leaf: int = 50
    feature_fraction: float = 0.8
    eval_at: int = 10
    seed: int = 0
    # A categorical column with more distinct training values than this is split as a
    # number instead: LightGBM overfits categories with few rows each (a grocery catalog
    # has thousands of product types).
    max_categories: int = 64

    def lambdamart_checks(self) -> list[tuple[bool, str]]:
        """``(ok, message)`` pairs for :func:`pipelines.errors.require_all`."""
        return [
            (self.num_leaves >= 2, "num_leaves must be >= 2"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.max_rounds >= 1, "max_rounds must be >= 1"),
            (self.early_stopping_rounds >= 1, "early_stopping_rounds must be >= 1"),
            (0 <= self.min_rounds <= self.max_rounds, "min_rounds must be in 0..max_rounds"),
            (self.min_data_in_leaf >= 1, "min_data_in_leaf must be >= 1"),
            (0 < self.feature_fraction <= 1, "feature_fraction must be in (0, 1]"),
            (self.eval_at >= 1, "eval_at must be >= 1"),
            (self.max_categories >= 2, "max_categories must be >= 2"),
        ]

    def params(self) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "ndcg_eval_at": [self.eval_at],
            "num_leaves": self.num_leaves,
            "learning_rate": self.learning_rate,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }


def fit_lambdamart(
    train: Grouped,
    valid: Grouped,
    names: list[str],
    cfg: LambdaMARTConfig,
    *,
    categorical: tuple[str, ...] = (),
) -> tuple[Any, dict[str, list[float]]]:
    """Fit on ``train``, early-stop on ``valid`` (with ``cfg.refit``, then fit again on
    both for the chosen rounds); returns (booster, nDCG learning curves of the
    early-stopped fit ``{"train": [...], "validation": [...]}``). ``categorical`` names columns of
    ``names`` LightGBM splits as categories (those with at most ``cfg.max_categories``
    distinct training values). Both sets need at least one group."""
    import lightgbm as lgb

    if not len(train.groups) or not len(valid.groups):
        raise ValueError("fit_lambdamart needs at least one training and one validation group")
    dtrain = lgb.Dataset(
        train.x,
        train.y,
        group=train.groups,
        feature_name=names,
        categorical_feature=categorical_columns(train.x, names, categorical, cfg.max_categories),
        free_raw_data=False,
    )
    dvalid = lgb.Dataset(valid.x, valid.y, group=valid.groups, reference=dtrain)

    def boost(rounds: int, stop: bool) -> tuple[Any, dict[str, Any]]:
        curves: dict[str, Any] = {}
        callbacks = [lgb.record_evaluation(curves)]
        if stop:
            callbacks.insert(0, lgb.early_stopping(cfg.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            cfg.params(), dtrain, num_boost_round=rounds, valid_sets=[dtrain, dvalid],
            valid_names=["train", "validation"], callbacks=callbacks,
        )  # fmt: skip
        return booster, curves

    booster, curves = boost(cfg.max_rounds, stop=True)
    if booster.best_iteration < cfg.min_rounds:  # stopped on noise: train min_rounds
        booster, curves = boost(cfg.min_rounds, stop=False)
        booster.best_iteration = cfg.min_rounds
    key = f"ndcg@{cfg.eval_at}"
    out = {split: list(curves[split][key]) for split in ("train", "validation")}
    if cfg.refit:
        rounds = int(booster.best_iteration or booster.current_iteration())
        x = np.concatenate([train.x, valid.x])
        every = lgb.Dataset(
            x,
            np.concatenate([train.y, valid.y]),
            group=np.concatenate([train.groups, valid.groups]),
            feature_name=names,
            categorical_feature=categorical_columns(x, names, categorical, cfg.max_categories),
        )
        booster = lgb.train(cfg.params(), every, num_boost_round=rounds)
        booster.best_iteration = rounds
    return booster, out


def categorical_columns(
    x: np.ndarray, names: list[str], categorical: tuple[str, ...], max_categories: int
) -> list[int]:
    """The columns of ``categorical`` that LightGBM splits as categories: present, with at
    most ``max_categories`` distinct (non-missing) values in ``x``."""
    out = []
    for c in categorical:
        if c not in names:
            continue
        j = names.index(c)
        values = x[:, j]
        if len(np.unique(values[np.isfinite(values)])) <= max_categories:
            out.append(j)
    return out


def predict(booster: Any, x: np.ndarray) -> np.ndarray:
    """Scores of the rows ``x`` (one thread: callers parallelise over batches), by the
    booster's compiled model when the serving API compiled one (``compiled.py``)."""
    fast = compiled(booster)
    if fast is not None and len(x):
        return np.asarray(fast.predict(np.ascontiguousarray(x, dtype=np.float64), n_jobs=1))
    return np.asarray(booster.predict(x, num_threads=1), dtype=np.float64)


def contributions(booster: Any, x: np.ndarray) -> np.ndarray:
    """Per-row SHAP contributions of each feature (the last column is the bias)."""
    with _CONTRIB_LOCK:
        return np.asarray(booster.predict(x, pred_contrib=True))


def importance(booster: Any, names: list[str]) -> pd.DataFrame:
    """Total gain and split count per feature, most important first."""
    return pd.DataFrame(
        {
            "feature": names,
            "gain": booster.feature_importance("gain"),
            "splits": booster.feature_importance("split"),
        }
    ).sort_values("gain", ascending=False, ignore_index=True)
