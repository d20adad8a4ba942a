"""Buy again: the items a shopper bought before, when they are due again.

For each item a shopper bought (in a category where repeats are allowed, see
:mod:`pipelines.candidates.repeats`), with ``b`` purchase occasions, ``d`` days since the
last one and ``g`` the typical days between purchases (the shopper's own mean gap when
they bought it twice or more, else the item's, else its category's; 30 without any)::

    score = log(1 + b) * (0.5 + 0.5 * min(d / g, 1)) * 0.5 ** (d / repeat_half_life_days)

Bought more often scores higher; an item bought yesterday and usually bought monthly is
not due yet (half weight); one long forgotten decays away. The ranker sees the parts as
features (times bought, days since, due ratio, the item's and category's repurchase
rates) and learns how much each matters.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from pipelines.candidates.base import Context, Generator, UserBatch, rows_where
from pipelines.candidates.repeats import Repeats
from pipelines.data.timeline import DAY


def repeat_parts(
    repeats: Repeats, codes: np.ndarray, items: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times bought, days since the last purchase, days since ÷ typical interval) of the
    pairs (user code, item code); 0 / NaN / NaN where the user never bought the item or is
    unknown (code -1)."""
    if not len(items):  # no candidates (filters excluded every item)
        empty = np.zeros(0, dtype=np.float32)
        return empty, empty.copy(), empty.copy()
    known = codes >= 0
    safe = np.where(known, codes, 0)
    buys = np.asarray(repeats.buys[safe, items]).ravel()
    buys = np.where(known, buys, 0.0)
    last = np.asarray(repeats.last_bought[safe, items]).ravel()
    gap = np.asarray(repeats.mean_gap_days[safe, items]).ravel()
    bought = buys > 0
    days = np.where(bought, -(last + 1.0) / DAY, np.nan)
    ratio = np.where(bought, days / repeats.interval(gap, items), np.nan)
    return buys.astype(np.float32), days.astype(np.float32), ratio.astype(np.float32)


def repeat_score(
    buys: np.ndarray, days: np.ndarray, ratio: np.ndarray, half_life: float
) -> np.ndarray:
    """The module docstring's score (0 where never bought)."""
    due = 0.5 + 0.5 * np.minimum(np.nan_to_num(ratio, nan=0.0), 1.0)
    decay = np.power(0.5, np.nan_to_num(days, nan=0.0) / half_life)
    return np.where(buys > 0, np.log1p(buys) * due * decay, 0.0).astype(np.float32)


class RepeatGenerator(Generator):
    name = "repeat"

    def _fit(self, ctx: Context) -> None:
        del ctx  # the history's purchase statistics are all it needs

    def _bought(self, batch: UserBatch) -> sp.csr_matrix:
        """The batch's rows of purchase occasions, on allowed items, known users only."""
        return batch.remember(("bought", id(self)), lambda: self._bought_rows(batch))

    def _bought_rows(self, batch: UserBatch) -> sp.csr_matrix:
        repeats = self.ctx.history.repeats
        n_items = len(self.ctx.item_ids)
        if repeats is None or not repeats.any_allowed:
            return sp.csr_matrix((len(batch), n_items), dtype=np.float32)
        known = batch.codes >= 0
        out = rows_where(repeats.buys[np.where(known, batch.codes, 0)], known)
        out.data[~repeats.allowed[out.indices]] = 0  # items not to show again
        out.eliminate_zeros()
        return out

    def answers(self, batch: UserBatch) -> np.ndarray:
        return np.diff(self._bought(batch).indptr) > 0

    missing_score = float("nan")  # not bought: not on the list, never padded

    def sparse_scores(self, batch: UserBatch) -> sp.csr_matrix:
        repeats = self.ctx.history.repeats
        bought = self._bought(batch).tocoo()
        shape = (len(batch), len(self.ctx.item_ids))
        if repeats is None or not bought.nnz:
            return sp.csr_matrix(shape, dtype=np.float32)
        codes = batch.codes[bought.row]
        buys, days, ratio = repeat_parts(repeats, codes, bought.col)
        score = repeat_score(buys, days, ratio, self.cfg.repeat_half_life_days)
        # a score that decayed to 0 stays a tiny one: the entry means "bought"
        score = np.maximum(score, np.float32(1e-30))
        return sp.csr_matrix((score, (bought.row, bought.col)), shape=shape, dtype=np.float32)

    def scores(self, batch: UserBatch) -> np.ndarray:
        out = np.full((len(batch), len(self.ctx.item_ids)), np.nan, dtype=np.float32)
        s = self.sparse_scores(batch).tocoo()
        out[s.row, s.col] = s.data
        return out
