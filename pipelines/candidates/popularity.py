"""Popularity candidates for cold start: by segment and by demographics, and trending.

``popularity``: for each group of users, the smoothed share of its active users who
touched an item, ``(n_gi + m * p_i) / (n_g + m)``, with ``p_i`` the share over all active
users and ``m = popularity_smoothing``. Groups are the user's segment (from the
user_profile features) and their demographic cell (age band x gender); a user's score is
the mean over the groups known for them, global popularity when none is. A shopper with
no events but a known age and gender thus gets what people like them buy.

``trending``: the event-weighted count of each item in the last ``trending_days``, with
all-time popularity breaking ties (the same list for every user).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.candidates.base import AGE_BANDS, Context, Generator, UserBatch, age_band
from pipelines.candidates.itemitem import binary


def _group_rates(
    groups: np.ndarray, n_groups: int, x: sp.csr_matrix, global_rate: np.ndarray, m: float
) -> np.ndarray:
    """Smoothed per-group touch rates, shape (n_groups, n_items); -1 groups are skipped."""
    active = np.diff(x.indptr) > 0
    ok = (groups >= 0) & active
    member = sp.csr_matrix(
        (np.ones(int(ok.sum()), dtype=np.float32), (groups[ok], np.flatnonzero(ok))),
        shape=(n_groups, x.shape[0]),
    )
    counts = np.asarray((member @ x).toarray(), dtype=np.float64)
    size = np.asarray(member.sum(axis=1)).ravel()[:, None]
    return ((counts + m * global_rate[None, :]) / (size + m)).astype(np.float32)


class PopularityGenerator(Generator):
    name = "popularity"

    def _demo_cell(self, age: np.ndarray, gender: np.ndarray) -> np.ndarray:
        g = pd.Index(self.genders).get_indexer(pd.Index(np.asarray(gender, dtype=object)))
        g = np.where(g < 0, len(self.genders), g)
        return age_band(age) * (len(self.genders) + 1) + g

    def _fit(self, ctx: Context) -> None:
        x = binary(ctx.history.matrix)
        active = max(int((np.diff(x.indptr) > 0).sum()), 1)
        self.global_rate = (ctx.history.popularity / active).astype(np.float32)
        m = self.cfg.popularity_smoothing
        genders = pd.Series(ctx.side.gender).dropna().astype(str).unique()
        self.genders = np.sort(genders).astype(str)
        n_cells = (len(AGE_BANDS) + 1) * (len(self.genders) + 1)
        cells = self._demo_cell(ctx.side.age, ctx.side.gender)
        self.demo_rates = _group_rates(cells, n_cells, x, self.global_rate, m)
        seg = ctx.side.segment.astype(np.int64)
        n_seg = int(seg.max()) + 1 if len(seg) and seg.max() >= 0 else 0
        self.segment_rates = _group_rates(seg, n_seg, x, self.global_rate, m)

    def scores(self, batch: UserBatch) -> np.ndarray:
        cells = self._demo_cell(batch.age, batch.gender)
        has_demo = ~np.isnan(np.asarray(batch.age, float)) | pd.notna(batch.gender)
        total = np.where(has_demo[:, None], self.demo_rates[cells], 0.0)
        count = has_demo.astype(np.float32)
        seg = np.asarray(batch.segment, dtype=np.int64)
        has_seg = (seg >= 0) & (seg < len(self.segment_rates))
        if has_seg.any():
            total[has_seg] += self.segment_rates[seg[has_seg]]
            count += has_seg
        out = np.where(count[:, None] > 0, total / np.maximum(count, 1)[:, None], self.global_rate)
        return out.astype(np.float32)

    def answers(self, batch: UserBatch) -> np.ndarray:
        return np.ones(len(batch), dtype=bool)

    def shared(self, batch: UserBatch) -> tuple[np.ndarray, np.ndarray]:
        has_demo = ~np.isnan(np.asarray(batch.age, float)) | pd.notna(batch.gender)
        cell = np.where(has_demo, self._demo_cell(batch.age, batch.gender), -1)
        seg = np.asarray(batch.segment, dtype=np.int64)
        seg = np.where((seg >= 0) & (seg < len(self.segment_rates)), seg, -1)
        key = (cell + 1) * (len(self.segment_rates) + 1) + (seg + 1)
        _, first, group = np.unique(key, return_index=True, return_inverse=True)
        return group.ravel(), self.scores(batch.take(first))

    def state(self) -> dict[str, Any]:
        return {
            "global_rate": self.global_rate,
            "genders": self.genders,
            "demo_rates": self.demo_rates,
            "segment_rates": self.segment_rates,
        }

    def set_state(self, arrays: dict[str, Any]) -> None:
        self.global_rate = arrays["global_rate"]
        self.genders = arrays["genders"].astype(str)
        self.demo_rates = arrays["demo_rates"]
        self.segment_rates = arrays["segment_rates"]


class TrendingGenerator(Generator):
    name = "trending"

    def _fit(self, ctx: Context) -> None:
        h = ctx.history
        pop = h.popularity / max(float(h.popularity.max(initial=0.0)), 1.0)
        self.score = (h.trending + 1e-3 * pop).astype(np.float32)

    def scores(self, batch: UserBatch) -> np.ndarray:
        return np.broadcast_to(self.score, (len(batch), len(self.score))).copy()

    def answers(self, batch: UserBatch) -> np.ndarray:
        return np.ones(len(batch), dtype=bool)

    def shared(self, batch: UserBatch) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(batch), dtype=np.int64), self.score[None, :]

    def state(self) -> dict[str, Any]:
        return {"score": self.score}

    def set_state(self, arrays: dict[str, Any]) -> None:
        self.score = arrays["score"]
