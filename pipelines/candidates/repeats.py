"""Buying again: who bought what how often, how regularly, and where repeats are allowed.

A *purchase occasion* is one (shopper, item, session) with a purchase: several rows of one
basket are one occasion. From the occasions in a history:

- per (shopper, item): ``buys`` (occasions), the time of the last one, and the mean gap in
  days between consecutive occasions (when there are two or more);
- per item: its *repurchase rate* (the share of its buyers with two or more occasions) and
  its typical interval (the median of its repeat buyers' mean gaps);
- per top-level category: the same, pooled over its items.

**Repeat policy** (``[candidates] repeats``): ``never`` hides every item a shopper touched
(the classic recommender), ``always`` shows any again, ``auto`` decides per top-level
category from the data: repeats are allowed where the category's repurchase rate (its
repeat buyers over its buyers plus ``repeat_prior`` pseudo-buyers who never bought again,
so a category with few buyers needs clear evidence) is at least ``repeat_min_rate`` (2 %):
groceries and consumables qualify, a television (bought once) does not, and a catalog
nobody ever bought twice (MovieLens' ratings) comes out ``never`` everywhere.
``repeat_categories`` overrides the rule per top-level category (``{"Electronics" =
"never"}``). docs/recommendation.md explains the rule and its thresholds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.candidates.config import REPEAT_MODES, CandidateConfig
from pipelines.data.timeline import DAY, PURCHASE, Timeline, session_codes
from pipelines.io import write_json


@dataclass
class Repeats:
    """The purchase statistics of one history (module docstring); arrays by item code."""

    buys: sp.csr_matrix  # (users, items) purchase occasions
    last_bought: sp.csr_matrix  # same sparsity: time of the last occasion - now - 1 (< 0)
    mean_gap_days: sp.csr_matrix  # same sparsity: mean days between occasions; 0 when one
    item_rate: np.ndarray  # share of the item's buyers who bought it on 2+ occasions
    item_interval: np.ndarray  # median mean-gap of its repeat buyers, days (NaN: none)
    category_rate: np.ndarray  # per item: its top-level category's smoothed rate
    category_interval: np.ndarray  # per item: the category's median gap, days (NaN: none)
    allowed: np.ndarray  # bool per item: may be shown again to someone who touched it
    policy: dict[str, Any]  # top-level category -> {"rate", "buyers", "repeats"}

    @property
    def any_allowed(self) -> bool:
        return bool(self.allowed.any())

    def interval(self, user_gap: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The typical days between purchases for these (shopper, item) pairs: the shopper's
        own mean gap when they bought it twice or more, else the item's, else its
        category's, else 30."""
        out = np.where(user_gap > 0, user_gap, np.nan)
        out = np.where(np.isnan(out), self.item_interval[items], out)
        out = np.where(np.isnan(out), self.category_interval[items], out)
        return np.where(np.isnan(out), 30.0, out)

    # --- persistence
    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name in ("buys", "last_bought", "mean_gap_days"):
            sp.save_npz(folder / f"{name}.npz", getattr(self, name))
        np.savez(
            folder / "items.npz",
            item_rate=self.item_rate,
            item_interval=self.item_interval,
            category_rate=self.category_rate,
            category_interval=self.category_interval,
            allowed=self.allowed,
        )
        write_json(folder / "policy.json", self.policy)

    @classmethod
    def load(cls, folder: Path) -> Repeats:
        with np.load(folder / "items.npz", allow_pickle=False) as a:
            arrays = {k: a[k] for k in a.files}
        return cls(
            buys=sp.load_npz(folder / "buys.npz").tocsr(),
            last_bought=sp.load_npz(folder / "last_bought.npz").tocsr(),
            mean_gap_days=sp.load_npz(folder / "mean_gap_days.npz").tocsr(),
            policy=dict(json.loads((folder / "policy.json").read_text())),
            **arrays,
        )


def top_categories(tl: Timeline) -> tuple[np.ndarray, np.ndarray]:
    """(code per item, names): the first level of each item's category path."""
    top = pd.Series(tl.categories).astype(str).str.split("/").str[0]
    codes, names = pd.factorize(top)
    return codes[tl.category].astype(np.int64), np.asarray(names, dtype=str)


def repeat_stats(
    tl: Timeline, selected: np.ndarray | slice, now: float, cfg: CandidateConfig
) -> Repeats:
    """The purchase statistics and the repeat policy (``cfg.repeats`` and its thresholds)
    of the events ``selected`` (before ``now``)."""
    mode, min_rate, prior = cfg.repeats, cfg.repeat_min_rate, cfg.repeat_prior
    assert mode in REPEAT_MODES
    user, item, etype, ts = (a[selected] for a in (tl.user, tl.item, tl.etype, tl.ts))
    session = session_codes(tl, selected)
    shape = (tl.n_users, tl.n_items)
    bought = etype == PURCHASE
    occ = pd.DataFrame(
        {"u": user[bought], "i": item[bought], "s": session[bought], "t": ts[bought]}
    )
    occ = occ.groupby(["u", "i", "s"], sort=False)["t"].min().reset_index()
    pairs = occ.groupby(["u", "i"], sort=True)["t"].agg(["count", "min", "max"]).reset_index()
    u, i = pairs["u"].to_numpy(np.int64), pairs["i"].to_numpy(np.int64)
    n = pairs["count"].to_numpy(np.float64)
    gap = np.where(n > 1, (pairs["max"].to_numpy() - pairs["min"].to_numpy()) / DAY / np.maximum(n - 1, 1), 0.0)  # fmt: skip

    def matrix(values: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((values.astype(np.float32), (u, i)), shape=shape)

    buys = matrix(n)
    last = matrix(pairs["max"].to_numpy() - now - 1.0)
    gaps = matrix(gap)
    buyers = np.bincount(i, minlength=tl.n_items).astype(np.float64)
    repeaters = np.bincount(i, weights=(n > 1).astype(float), minlength=tl.n_items)
    item_rate = np.where(buyers > 0, repeaters / np.maximum(buyers, 1), 0.0)
    item_interval = _median_by(i[n > 1], gap[n > 1], tl.n_items)
    top, names = top_categories(tl)
    c_buyers = np.bincount(top, weights=buyers, minlength=len(names))
    c_repeaters = np.bincount(top, weights=repeaters, minlength=len(names))
    # shrunk toward "nobody buys again": a category needs evidence of repeats, so a small
    # durable category is never let through on the catalog's grocery-heavy average
    c_rate = c_repeaters / (c_buyers + prior)
    c_interval = _median_by(top[i[n > 1]], gap[n > 1], len(names))
    overrides = cfg.repeat_categories
    policy: dict[str, Any] = {}
    allowed_c = np.zeros(len(names), dtype=bool)
    for c, name in enumerate(names):
        rule = overrides.get(str(name), mode)
        ok = rule == "always" or (rule == "auto" and c_rate[c] >= min_rate and c_repeaters[c] > 0)
        allowed_c[c] = ok
        policy[str(name)] = {
            "rate": round(float(c_rate[c]), 4),
            "buyers": int(c_buyers[c]),
            "repeats": "allowed" if ok else "never",
            "rule": rule,
        }
    return Repeats(
        buys=buys,
        last_bought=last,
        mean_gap_days=gaps,
        item_rate=item_rate.astype(np.float32),
        item_interval=item_interval.astype(np.float32),
        category_rate=c_rate[top].astype(np.float32),
        category_interval=c_interval[top].astype(np.float32),
        allowed=allowed_c[top],
        policy=policy,
    )


def _median_by(group: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.nan)
    if len(group):
        medians = pd.Series(values).groupby(group).median()
        out[medians.index.to_numpy()] = medians.to_numpy()
    return out


def banned(rows: sp.csr_matrix, allowed: np.ndarray | None) -> sp.csr_matrix:
    """The seen items of ``rows`` that may not be shown again (those not ``allowed``)."""
    if allowed is None or not allowed.any():
        return rows
    out = (rows @ sp.diags((~allowed).astype(np.float32))).tocsr()
    out.eliminate_zeros()
    return out
