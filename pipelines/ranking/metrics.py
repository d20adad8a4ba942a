"""Ranking and beyond-accuracy metrics at k over recommendation lists and held-out truths.

``recs`` has one row per (user_id, rank, item_id), rank 1 the best; ``truth`` one row per
relevant (user_id, item_id), with an optional graded ``relevance`` (binary otherwise).
Every user in ``truth`` with a relevance > 0 counts; a user with no recommendations
scores 0. ``rank`` only orders a user's list: positions 1..n are given in rank order,
ties broken by item id, and an item listed twice counts at its first position. The
definitions, ranges and sources are in docs/evaluation.md; with hits at positions r
and n relevant items:

- precision@k = hits / k; recall@k = hits / n; hit_rate@k = 1 if any hit;
- nDCG@k = sum gain_r / log2(r + 1) over the top k, divided by the same sum for the ideal
  order of the user's relevant items (gain = relevance; 1 for binary);
- MAP@k = sum over hits of precision@r, divided by min(k, n);
- MRR@k = 1 / position of the first hit (0 without one);
- coverage@k = distinct items in all top-k lists / catalog size;
- novelty@k = mean over a list of -log2 p(i), p(i) = (users who touched i + 1) / (users + 1);
- ild@k = mean over pairs of a list of the category-path distance
  1 - (shared leading path levels) / (the deeper path's levels).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("ndcg", "precision", "recall", "map", "hit_rate", "mrr")
BEYOND_ACCURACY = ("coverage", "novelty", "ild")


def positions(recs: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each user's list as user_id, rank (1..n, contiguous), item_id, cut at ``k``."""
    if k < 1:
        raise ValueError("k must be >= 1")
    r = recs[["user_id", "rank", "item_id"]].sort_values(
        ["user_id", "rank", "item_id"], kind="stable"
    )
    r = r.drop_duplicates(["user_id", "item_id"], keep="first")
    r = r.assign(rank=r.groupby("user_id", sort=False).cumcount() + 1)
    return r[r["rank"] <= k]


def per_user(recs: pd.DataFrame, truth: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per truth user (relevance > 0) with each of :data:`METRICS` at ``k``."""
    return per_user_ranked(positions(recs, k), truth, k)


def per_user_ranked(r: pd.DataFrame, truth: pd.DataFrame, k: int) -> pd.DataFrame:
    """:func:`per_user` for lists already passed through :func:`positions` (callers that
    score one set of lists against many truths normalise them once)."""
    r = r[r["rank"] <= k]
    t = truth[["user_id", "item_id"]].copy()
    t["relevance"] = truth["relevance"].astype(float) if "relevance" in truth else 1.0
    t = t[t["relevance"] > 0]
    t = t.sort_values("relevance", ascending=False).drop_duplicates(["user_id", "item_id"])
    users = pd.Index(pd.unique(truth["user_id"][truth["user_id"].isin(t["user_id"])]))
    users.name = "user_id"
    r = r[r["user_id"].isin(users)]
    hits = r.merge(t, on=["user_id", "item_id"], how="inner").sort_values(["user_id", "rank"])
    hits["discount"] = 1.0 / np.log2(hits["rank"] + 1.0)
    hits["n_hit"] = hits.groupby("user_id").cumcount() + 1
    hits["prec_at_r"] = hits["n_hit"] / hits["rank"]
    g = hits.groupby("user_id")
    n_rel = t.groupby("user_id").size().reindex(users)
    # ideal DCG: the user's k best gains at ranks 1..k
    ideal = t.sort_values(["user_id", "relevance"], ascending=[True, False])
    ideal["r"] = ideal.groupby("user_id").cumcount() + 1
    ideal = ideal[ideal["r"] <= k]
    idcg = (ideal["relevance"] / np.log2(ideal["r"] + 1.0)).groupby(ideal["user_id"]).sum()
    dcg = (hits["relevance"] * hits["discount"]).groupby(hits["user_id"]).sum()
    n_hits = g.size().reindex(users, fill_value=0)
    out = pd.DataFrame(index=users)
    out["ndcg"] = (dcg.reindex(users, fill_value=0.0) / idcg.reindex(users)).fillna(0.0)
    out["precision"] = n_hits / k
    out["recall"] = n_hits / n_rel
    out["map"] = g["prec_at_r"].sum().reindex(users, fill_value=0.0) / np.minimum(n_rel, k)
    out["hit_rate"] = (n_hits > 0).astype(float)
    out["mrr"] = (1.0 / g["rank"].min()).reindex(users, fill_value=0.0)
    return out


def ranking_metrics(recs: pd.DataFrame, truth: pd.DataFrame, k: int = 10) -> dict[str, float]:
    """Each metric at ``k`` averaged over the users in ``truth``."""
    table = per_user(recs, truth, k)
    if table.empty:
        return dict.fromkeys(METRICS, 0.0)
    return {m: float(table[m].mean()) for m in METRICS}


def catalog_coverage(recs: pd.DataFrame, catalog: pd.Index | set[str], k: int) -> float:
    """Share of the ``catalog`` (item ids that could be recommended) that appears in at
    least one top-``k`` list; items outside the catalog do not count. Range [0, 1]."""
    items = pd.Index(list(catalog) if isinstance(catalog, set) else catalog)
    if not len(items):
        return 0.0
    shown = pd.Index(positions(recs, k)["item_id"].unique())
    return float(shown.isin(items).sum() / len(items))


def novelty(recs: pd.DataFrame, popularity: pd.Series, n_users: int, k: int) -> pd.Series:
    """Per user: mean self-information -log2 p(i) of the top-``k`` items, with
    p(i) = (popularity[i] + 1) / (n_users + 1) (``popularity``: item_id -> number of users
    who touched the item before the evaluation window; unknown items count 0).
    Range [0, log2(n_users + 1)]."""
    r = positions(recs, k)
    counts = popularity.reindex(r["item_id"]).fillna(0.0).to_numpy(dtype=float)
    info = -np.log2((counts + 1.0) / (n_users + 1.0))
    return pd.Series(info, index=r["user_id"].to_numpy()).groupby(level=0).mean()


def intra_list_diversity(
    recs: pd.DataFrame, category: pd.Series, k: int, chunk: int = 2_000
) -> pd.Series:
    """Per user with at least two items: mean over the pairs of the top-``k`` list of the
    category-path distance 1 - shared / max(depth_a, depth_b), where ``shared`` counts the
    leading path levels two items have in common ('A/B/C' vs 'A/B/D': 1 - 2/3). ``category``:
    item_id -> 'Top/Sub/Leaf'. Range [0, 1]; 0 = every item in one leaf category."""
    r = positions(recs, k)
    distinct = pd.Index(r["item_id"].unique())
    paths = category.reindex(distinct).fillna("").astype(str).str.split("/")
    depth_max = int(paths.map(len).max()) if len(paths) else 0
    item_levels = np.full((len(distinct), max(depth_max, 1)), -1, dtype=np.int64)
    for level in range(depth_max):
        prefix = [("/".join(p[: level + 1]) if len(p) > level else None) for p in paths]
        codes, _ = pd.factorize(pd.Series(prefix, dtype=object))  # None -> -1
        item_levels[:, level] = codes
    levels = item_levels[distinct.get_indexer(pd.Index(r["item_id"]))]
    depth = (levels >= 0).sum(axis=1)
    users, start = np.unique(r["user_id"].to_numpy(), return_index=True)
    order = np.argsort(start)
    users, start = users[order], start[order]
    length = np.diff(np.r_[start, len(r)])
    out = np.full(len(users), np.nan)
    width = int(length.max(initial=0))
    for lo in range(0, len(users), chunk):
        sl = slice(lo, lo + chunk)
        n, s = length[sl], start[sl]
        idx = s[:, None] + np.arange(width)[None, :]
        valid = np.arange(width)[None, :] < n[:, None]
        idx = np.where(valid, idx, 0)
        lv = np.where(valid[:, :, None], levels[idx], -2)  # (users, width, levels)
        same = (lv[:, :, None, :] == lv[:, None, :, :]) & (lv[:, :, None, :] >= 0)
        shared = np.cumprod(same, axis=3).sum(axis=3)
        d = depth[idx]
        deeper = np.maximum(d[:, :, None], d[:, None, :])
        dist = 1.0 - shared / np.maximum(deeper, 1)
        pair = valid[:, :, None] & valid[:, None, :] & ~np.eye(width, dtype=bool)[None]
        n_pairs = n * (n - 1)
        total = np.where(pair, dist, 0.0).sum(axis=(1, 2))
        out[sl] = np.where(n_pairs > 0, total / np.maximum(n_pairs, 1), np.nan)
    return pd.Series(out, index=users).dropna()
