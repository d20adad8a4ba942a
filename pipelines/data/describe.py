"""``shopml data describe``: what a snapshot holds and how hard it is to model.

Figures (all from the snapshot's own tables):

- sparsity: 1 - distinct (user, item) pairs / (active users x active items);
- popularity skew: the Gini coefficient of events per item (0 = every item equally
  popular, 1 = one item has everything) and the share of events on the top 1% / 10%
  of items;
- funnel: add_to_cart per view (search clicks count as views) and purchase per add_to_cart;
- cold start, for the last ``window_days`` of the event period: the share of active
  users and items first seen in that window, and the share of users who sign up or
  items created during the whole period.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from pipelines.data.contract import EVENT_TYPES
from pipelines.data.snapshot import Snapshot
from pipelines.errors import SnapshotError


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts (0 equal, towards 1 concentrated)."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    if len(x) == 0 or x.sum() == 0:
        return 0.0
    n = len(x)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(x) / (n * x.sum()))


def _top_share(counts: np.ndarray, fraction: float) -> float:
    x = np.sort(counts)[::-1]
    k = max(1, int(np.ceil(len(x) * fraction)))
    return float(x[:k].sum() / x.sum()) if x.sum() else 0.0


def describe_snapshot(path: str | Path, *, window_days: int = 14) -> dict[str, Any]:
    """Summary figures of the snapshot at ``path`` as a JSON-ready dict."""
    snap = Snapshot.open(path)
    m = snap.manifest
    try:
        snap.verify_cached()
        integrity = "ok: every table matches the manifest"
    except SnapshotError as exc:
        integrity = f"ALTERED: {exc}"
    out: dict[str, Any] = {
        "snapshot_id": snap.id,
        "integrity": integrity,
        "source": m["source"],
        "kind": m.get("kind", "interactions"),
        "rows": m["row_counts"],
        "event_time": m["event_time"],
    }
    users = snap.read("users").to_pandas()
    items = snap.read("items", columns=["item_id", "category", "brand", "created_ts"]).to_pandas()
    out["users"] = {
        "total": len(users),
        "with_age": float(users["age"].notna().mean()) if len(users) else 0.0,
        "with_gender": float(users["gender"].notna().mean()) if len(users) else 0.0,
        "with_region": float(users["region"].notna().mean()) if len(users) else 0.0,
    }
    out["items"] = {
        "total": len(items),
        "categories": int(items["category"].nunique()),
        "brands": int(items["brand"].nunique()),
        "image_embedding_dim": m.get("image_embedding_dim"),
    }
    if snap.rows("events"):
        out.update(_describe_events(snap, users, items, window_days))
    if snap.rows("queries"):
        q = snap.read("queries", columns=["clicked_item_ids"])
        clicks = pc.list_value_length(q.column("clicked_item_ids")).to_numpy(zero_copy_only=False)
        out["queries"] = {
            "total": q.num_rows,
            "with_click": float((clicks > 0).mean()),
            "clicks_per_query": float(clicks.mean()),
        }
    if snap.has("judgments"):
        j = snap.read("judgments").to_pandas()
        out["judgments"] = {
            "total": len(j),
            "queries": int(j["query"].nunique()),
            "mean_relevance": float(j["relevance"].mean()),
        }
    return out


def _describe_events(
    snap: Snapshot, users: pd.DataFrame, items: pd.DataFrame, window_days: int
) -> dict[str, Any]:
    ev = snap.read("events", columns=["user_id", "item_id", "event_type", "ts", "session_id"])
    u_codes, u_uniques = pd.factorize(ev.column("user_id").to_pandas())
    i_codes, i_uniques = pd.factorize(ev.column("item_id").to_pandas())
    ts = ev.column("ts").cast("int64").to_numpy() / 1e6
    etype = ev.column("event_type").to_pandas()
    counts = {t: int((etype == t).sum()) for t in EVENT_TYPES}
    n_sessions = int(pc.count_distinct(ev.column("session_id")).as_py())
    views = counts["view"] + counts["search_click"]

    item_counts = np.bincount(i_codes)
    pairs = np.unique(u_codes.astype(np.int64) * len(i_uniques) + i_codes)
    sparsity = 1.0 - len(pairs) / (len(u_uniques) * len(i_uniques))

    # Cold start: first appearance of users and items relative to the final window.
    cut = ts.max() - window_days * 86_400
    first_u = np.full(len(u_uniques), np.inf)
    np.minimum.at(first_u, u_codes, ts)
    first_i = np.full(len(i_uniques), np.inf)
    np.minimum.at(first_i, i_codes, ts)
    in_window = ts >= cut
    active_u = np.unique(u_codes[in_window])
    active_i = np.unique(i_codes[in_window])
    t0 = pd.Timestamp(ts.min(), unit="s", tz="UTC")
    per_user = np.bincount(u_codes)
    return {
        "events": {
            "total": len(ts),
            "by_type": counts,
            "sessions": n_sessions,
            "events_per_session": len(ts) / max(n_sessions, 1),
            "days": (ts.max() - ts.min()) / 86_400,
        },
        "activity": {
            "active_users": len(u_uniques),
            "active_items": len(i_uniques),
            "events_per_user_median": float(np.median(per_user)),
            "events_per_user_mean": float(per_user.mean()),
            "sparsity": sparsity,
        },
        "popularity": {
            "gini": gini(
                np.concatenate([item_counts, np.zeros(max(len(items) - len(i_uniques), 0))])
            ),
            "top_1pct_share": _top_share(item_counts, 0.01),
            "top_10pct_share": _top_share(item_counts, 0.10),
        },
        "funnel": {
            "cart_per_view": counts["add_to_cart"] / views if views else None,
            "purchase_per_cart": counts["purchase"] / counts["add_to_cart"]
            if counts["add_to_cart"]
            else None,
        },
        "cold_start": {
            "window_days": window_days,
            "new_users_in_window": float((first_u[active_u] >= cut).mean())
            if len(active_u)
            else 0.0,
            "new_items_in_window": float((first_i[active_i] >= cut).mean())
            if len(active_i)
            else 0.0,
            "users_signed_up_in_period": float((users["signup_ts"] >= t0).mean())
            if len(users)
            else 0.0,
            "items_created_in_period": float((items["created_ts"] >= t0).mean())
            if len(items)
            else 0.0,
        },
    }
