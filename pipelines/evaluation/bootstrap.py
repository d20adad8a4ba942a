"""Percentile bootstrap confidence intervals for means of per-user metric values.

Users are resampled with replacement (Efron & Tibshirani 1993, ch. 13); every column of
one draw uses the same resampled users, so the interval of a challenger - champion
difference is paired: both models are scored on the same users in each draw.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "low": self.low, "high": self.high}


def bootstrap_means(
    values: np.ndarray,
    *,
    draws: int = 1_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[Interval]:
    """One percentile interval per column of ``values`` (users x columns) for the column
    mean. NaN entries (a user without that metric) are left out of that column's means."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    if draws < 1:
        raise ValueError("draws must be >= 1")
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n, m = x.shape
    if n == 0:
        return [Interval(float("nan"), float("nan"), float("nan")) for _ in range(m)]
    present = ~np.isnan(x)
    filled = np.where(present, x, 0.0)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(draws, 20_000_000 // (n * m)))  # about 160 MB of draws at a time
    means = np.empty((draws, m))
    for lo in range(0, draws, chunk):
        b = min(chunk, draws - lo)
        idx = rng.integers(0, n, size=(b, n))
        sums = filled[idx].sum(axis=1)
        counts = present[idx].sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[lo : lo + b] = sums / counts
    tail = (1.0 - confidence) / 2.0
    with warnings.catch_warnings():  # an all-NaN column gives NaN bounds, said in the report
        warnings.simplefilter("ignore", RuntimeWarning)
        low = np.nanquantile(means, tail, axis=0)
        high = np.nanquantile(means, 1.0 - tail, axis=0)
        point = np.nanmean(x, axis=0)
    return [
        Interval(float(p), float(a), float(b)) for p, a, b in zip(point, low, high, strict=True)
    ]
