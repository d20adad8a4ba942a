"""LambdaMART fitting: early stopping, the minimum number of rounds, categorical columns."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

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


def test_refit_trains_the_chosen_rounds_on_the_validation_groups_too() -> None:
    """Feature b ranks the items only inside the validation groups' range (10-20): the
    early-stopped model never saw that range; the refitted one did, for the same rounds."""
    rng = np.random.default_rng(0)

    def groups(n: int, lo: float, hi: float, signal: str) -> Rows:
        x = np.column_stack([rng.normal(size=n * 10), rng.uniform(lo, hi, n * 10)])
        key = x[:, 0] if signal == "a" else x[:, 1]
        y = np.zeros(n * 10, dtype=int)
        for g in range(n):
            block = slice(g * 10, (g + 1) * 10)
            y[block] = (key[block] >= np.sort(key[block])[-3]).astype(int)
        return Rows(x, y, np.full(n, 10))

    train, valid = groups(60, 0, 1, "a"), groups(30, 10, 20, "b")
    cfg = LambdaMARTConfig(max_rounds=40, early_stopping_rounds=40, min_data_in_leaf=5)
    plain, curves = fit_lambdamart(train, valid, ["a", "b"], cfg)
    refit, again = fit_lambdamart(
        train, valid, ["a", "b"], LambdaMARTConfig(**{**cfg.__dict__, "refit": True})
    )
    assert refit.num_trees() == refit.best_iteration == plain.best_iteration
    assert again == curves  # the curves are the early-stopped fit's
    # inside the validation range only the refitted model orders by b
    probe = np.column_stack([np.zeros(50), np.linspace(10, 20, 50)])
    assert np.corrcoef(refit.predict(probe), probe[:, 1])[0, 1] > 0.8
    assert np.ptp(plain.predict(probe)) < 1e-9


def test_a_compiled_ranker_scores_as_lightgbm_does(tmp_path) -> None:
    """The serving API's compiled ranker (lleaves) gives LightGBM's scores, with missing
    values and categorical columns, and ``predict`` uses it once it is registered."""
    from pipelines.ranking.compiled import compile_booster, compiled
    from pipelines.ranking.lambdamart import predict

    rng = np.random.default_rng(3)
    n = 40 * 20
    x = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n), rng.normal(size=n)])
    x[rng.random(x.shape) < 0.1] = np.nan
    y = ((x[:, 0] > 0) | (x[:, 1] == 3)).astype(int)
    rows = Rows(x, y, np.full(40, 20))
    cfg = LambdaMARTConfig(max_rounds=30, early_stopping_rounds=30, min_data_in_leaf=5)
    booster, _ = fit_lambdamart(rows, rows, ["a", "cat", "c"], cfg, categorical=("cat",))
    want = predict(booster, x)
    assert compiled(booster) is None
    (tmp_path / "compiled").mkdir()
    (tmp_path / "compiled" / "ranker.so").write_bytes(b"planted: never loaded")
    seconds = compile_booster(booster, tmp_path / "compiled")
    assert seconds > 0 and compiled(booster) is not None
    assert (tmp_path / "compiled" / "ranker.so").is_file()
    got = predict(booster, x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)
    assert predict(booster, x[:0]).shape == (0,)


def test_a_ranker_that_does_not_compile_stays_on_lightgbm(tmp_path) -> None:
    from pipelines.ranking.compiled import CompileError, compile_booster, compiled

    class Broken:
        def save_model(self, path: str) -> None:
            Path(path).write_text("not a model")

    broken = Broken()
    with pytest.raises(CompileError, match="does not compile"):
        compile_booster(broken, tmp_path / "compiled")
    assert compiled(broken) is None
