"""The ``item_stats`` feature view: how an item sells, as of a time t (events before t only)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from pipelines.data.contract import TS
from pipelines.data.timeline import CART, DAY, PURCHASE, SEARCH_CLICK, VIEW, Timeline
from pipelines.features.config import WINDOWS_DAYS, FeatureConfig
from pipelines.features.user_profile import TYPE_NAMES


def _smoothed(hits: np.ndarray, trials: np.ndarray, prior: float, strength: float) -> np.ndarray:
    """(hits + strength * prior) / (trials + strength): a rate that starts at the prior."""
    return ((hits + strength * prior) / (trials + strength)).astype(np.float32)


def stats_table(tl: Timeline, t: float, cfg: FeatureConfig) -> pa.Table:
    """One row per item created before ``t``."""
    items = tl.items
    rows = np.flatnonzero(items["created_s"].to_numpy() < t)
    cols: dict[str, pa.Array] = {
        "item_id": pa.array(items["item_id"].to_numpy()[rows], type=pa.string()),
        "event_timestamp": pa.array(np.full(len(rows), round(t * 1e6)), type=pa.int64()).cast(TS),
    }
    by_window: dict[int, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        s = tl.window(t, w)
        counts = np.bincount(tl.item[s] * 4 + tl.etype[s], minlength=tl.n_items * 4).reshape(
            tl.n_items, 4
        )
        by_window[w] = counts
        for k, name in enumerate(TYPE_NAMES):
            cols[f"{name}_{w}d"] = pa.array(counts[rows, k], type=pa.int32())

    # Conversion over the longest window, smoothed towards the shop-wide rate.
    c = by_window[max(WINDOWS_DAYS)]
    views = c[:, VIEW] + c[:, SEARCH_CLICK]
    carts, buys = c[:, CART], c[:, PURCHASE]
    total_views, total_carts = max(int(views.sum()), 1), max(int(carts.sum()), 1)
    a = cfg.conversion_prior_strength
    cols["cart_rate"] = pa.array(_smoothed(carts, views, carts.sum() / total_views, a)[rows])
    cols["purchase_rate"] = pa.array(_smoothed(buys, carts, buys.sum() / total_carts, a)[rows])
    cols["view_to_purchase_rate"] = pa.array(
        _smoothed(buys, views, buys.sum() / total_views, a)[rows]
    )
    cols["price"] = pa.array(items["price"].to_numpy()[rows], type=pa.float32())
    cols["category"] = pa.array(items["category"].to_numpy()[rows], type=pa.string())
    cols["brand"] = pa.array(items["brand"].to_numpy()[rows], type=pa.string(), from_pandas=True)
    cols["item_age_days"] = pa.array(
        (t - items["created_s"].to_numpy()[rows]) / DAY, type=pa.float32()
    )
    return pa.table(cols)
