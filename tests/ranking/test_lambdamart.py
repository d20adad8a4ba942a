"""LambdaMART fitting: early stopping, the minimum number of rounds, categorical columns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.ranking.lambdamart import LambdaMARTConfig, categorical_columns, fit_lambdamart


@dataclass
class Rows:
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


def noise(seed: int, groups: int = 40, per: int = 20) -> Rows:
    """Labels unrelated to the features: validation peaks after a round or two."""
    rng = np.random.default_rng(seed)
    n = groups * per
    return Rows(rng.normal(size=(n, 4)), (rng.random(n) < 0.2).astype(int), np.full(groups, per))


def test_min_rounds_keeps_training_past_an_early_noisy_peak() -> None:
    names = ["a", "b", "c", "d"]
    cfg = LambdaMARTConfig(max_rounds=200, early_stopping_rounds=5, min_data_in_leaf=5)
    early, _ = fit_lambdamart(noise(0), noise(1), names, cfg)
    assert early.best_iteration < 30
    kept, curves = fit_lambdamart(
        noise(0), noise(1), names, LambdaMARTConfig(**{**cfg.__dict__, "min_rounds": 30})
    )
    assert kept.num_trees() == 30 and kept.best_iteration == 30
    assert len(curves["validation"]) == 30


def test_only_low_cardinality_columns_are_categorical() -> None:
    x = np.column_stack([np.arange(1000) % 5, np.arange(1000), np.full(1000, np.nan)])
    assert categorical_columns(x, ["few", "many", "empty"], ("few", "many", "empty", "gone"), 64) == [
        0, 2,
    ]  # fmt: skip
