"""The ``user_profile`` feature view: who a shopper is and what they like, as of a time t.

Everything is computed from events strictly before t. The profile is advanced from one
grid time to the next by folding in only the new events (the decayed interest weights
decay as a whole, then the new events are added), so a build over many grid times costs
about one pass over the events.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from pipelines.data.contract import EVENT_TYPES, TS
from pipelines.data.timeline import DAY, PURCHASE, Timeline
from pipelines.features.config import WINDOWS_DAYS, FeatureConfig

TYPE_NAMES = EVENT_TYPES  # view, add_to_cart, purchase, search_click


def activity_columns(cfg: FeatureConfig) -> list[str]:
    return [f"{t}_{w}d" for w in WINDOWS_DAYS for t in TYPE_NAMES]


def top_k(weights: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the ``k`` largest entries: (offsets, column codes, shares of the row total)."""
    weights = weights.tocsr()
    weights.eliminate_zeros()
    rows = np.repeat(np.arange(weights.shape[0]), np.diff(weights.indptr))
    # Sorted by row, then by weight descending; the first k of each row are its top k.
    order = np.lexsort((-weights.data, rows))
    rank = np.arange(len(order)) - weights.indptr[rows[order]]
    keep = order[rank < k]
    sel_rows, sel_cols, sel_vals = rows[keep], weights.indices[keep], weights.data[keep]
    totals = np.asarray(weights.sum(axis=1)).ravel()
    offsets = np.concatenate(
        [[0], np.cumsum(np.bincount(sel_rows, minlength=weights.shape[0]))]
    ).astype(np.int32)
    shares = (sel_vals / np.maximum(totals[sel_rows], 1e-12)).astype(np.float32)
    return offsets, sel_cols, shares


@dataclass
class UserState:
    """Running aggregates of events before ``t``."""

    t: float
    done: int  # events [0, done) are folded in
    last_ts: np.ndarray
    total: np.ndarray
    category_weight: sp.csr_matrix
    brand_weight: sp.csr_matrix
    log_price_gap_sum: np.ndarray  # sum over purchases of log(category median / price)
    purchases: np.ndarray


def new_state(tl: Timeline) -> UserState:
    n = tl.n_users
    return UserState(
        t=-np.inf,
        done=0,
        last_ts=np.full(n, np.nan),
        total=np.zeros(n, dtype=np.int64),
        category_weight=sp.csr_matrix((n, len(tl.categories)), dtype=np.float64),
        brand_weight=sp.csr_matrix((n, max(len(tl.brands), 1)), dtype=np.float64),
        log_price_gap_sum=np.zeros(n),
        purchases=np.zeros(n, dtype=np.int64),
    )


def advance(
    state: UserState, tl: Timeline, t: float, cfg: FeatureConfig, category_median: np.ndarray
) -> None:
    """Fold the events in ``[state.t, t)`` into ``state``.

    ``category_median`` is the median price per category among items existing at ``t``,
    so the price gap of a purchase never uses items that appear later.
    """
    end = tl.before(t)
    new = slice(state.done, end)
    u, i, e, ts = tl.user[new], tl.item[new], tl.etype[new], tl.ts[new]
    h = cfg.half_life_days * DAY
    decay = 0.0 if not np.isfinite(state.t) else 2.0 ** (-(t - state.t) / h)
    weights = np.array([cfg.event_weights[name] for name in TYPE_NAMES])[e] * 2.0 ** (-(t - ts) / h)
    shape_c = state.category_weight.shape
    state.category_weight = (
        state.category_weight * decay + sp.csr_matrix((weights, (u, tl.category[i])), shape=shape_c)
    ).tocsr()
    branded = tl.brand[i] >= 0
    state.brand_weight = (
        state.brand_weight * decay
        + sp.csr_matrix(
            (weights[branded], (u[branded], tl.brand[i][branded])), shape=state.brand_weight.shape
        )
    ).tocsr()
    np.fmax.at(state.last_ts, u, ts)
    state.total += np.bincount(u, minlength=tl.n_users)
    bought = e == PURCHASE
    price = tl.items["price"].to_numpy()[i[bought]]
    gap = np.log(category_median[tl.category[i[bought]]] / price)
    np.add.at(state.log_price_gap_sum, u[bought], gap)
    state.purchases += np.bincount(u[bought], minlength=tl.n_users)
    state.t, state.done = t, end


def _median_purchase_price(tl: Timeline, t: float) -> np.ndarray:
    n = tl.before(t)
    bought = tl.etype[:n] == PURCHASE
    frame = pd.DataFrame(
        {"u": tl.user[:n][bought], "p": tl.items["price"].to_numpy()[tl.item[:n][bought]]}
    )
    med = np.full(tl.n_users, np.nan)
    if len(frame):
        g = frame.groupby("u")["p"].median()
        med[g.index.to_numpy()] = g.to_numpy()
    return med


def activity_counts(tl: Timeline, t: float, cfg: FeatureConfig) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        s = tl.window(t, w)
        counts = np.bincount(tl.user[s] * 4 + tl.etype[s], minlength=tl.n_users * 4).reshape(
            tl.n_users, 4
        )
        for k, name in enumerate(TYPE_NAMES):
            out[f"{name}_{w}d"] = counts[:, k].astype(np.int32)
    return out


def _tag_lists(
    names: np.ndarray, weights: sp.csr_matrix, k: int, rows: np.ndarray
) -> tuple[pa.Array, pa.Array]:
    offsets, cols, shares = top_k(weights[rows], k)
    tags = pa.ListArray.from_arrays(
        pa.array(offsets), pa.array(names[cols].astype(str) if len(cols) else [], type=pa.string())
    )
    vals = pa.ListArray.from_arrays(pa.array(offsets), pa.array(shares, type=pa.float32()))
    return tags, vals


def profile_table(
    tl: Timeline, state: UserState, t: float, cfg: FeatureConfig, segment: np.ndarray
) -> pa.Table:
    """One row per user signed up before ``t``; ``state`` must be advanced to ``t``."""
    users = tl.users
    rows = np.flatnonzero(users["signup_s"].to_numpy() < t)
    counts = activity_counts(tl, t, cfg)
    cat_tags, cat_w = _tag_lists(tl.categories, state.category_weight, cfg.top_k_tags, rows)
    brand_names = tl.brands if len(tl.brands) else np.array(["-"], dtype=object)
    brand_tags, brand_w = _tag_lists(brand_names, state.brand_weight, cfg.top_k_tags, rows)
    recency = (t - state.last_ts[rows]) / DAY
    sensitivity = np.where(
        state.purchases[rows] > 0,
        state.log_price_gap_sum[rows] / np.maximum(state.purchases[rows], 1),
        np.nan,
    )
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(users["user_id"].to_numpy()[rows], type=pa.string()),
        "event_timestamp": pa.array(np.full(len(rows), round(t * 1e6)), type=pa.int64()).cast(TS),
        "age": pa.array(users["age"].to_numpy()[rows], type=pa.float32(), from_pandas=True),
        "gender": pa.array(users["gender"].to_numpy()[rows], type=pa.string(), from_pandas=True),
        "region": pa.array(users["region"].to_numpy()[rows], type=pa.string(), from_pandas=True),
        "days_since_signup": pa.array(
            (t - users["signup_s"].to_numpy()[rows]) / DAY, type=pa.float32()
        ),
        "events_total": pa.array(state.total[rows], type=pa.int64()),
        "recency_days": pa.array(recency, type=pa.float32(), mask=np.isnan(recency)),
        "top_categories": cat_tags,
        "top_category_weights": cat_w,
        "top_brands": brand_tags,
        "top_brand_weights": brand_w,
        "median_purchase_price": pa.array(
            _median_purchase_price(tl, t)[rows], type=pa.float32(), from_pandas=True
        ),
        "price_sensitivity": pa.array(sensitivity, type=pa.float32(), mask=np.isnan(sensitivity)),
        "segment": pa.array(segment[rows], type=pa.int64()),
    }
    for name, values in counts.items():
        cols[name] = pa.array(values[rows], type=pa.int32())
    return pa.table(cols)
