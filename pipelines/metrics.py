"""Ranking metrics at k over recommendation lists and held-out truths.

``recs`` has one row per (user_id, rank, item_id), rank 1 the best; ``truth`` one row per
relevant (user_id, item_id), with an optional graded ``relevance`` (binary otherwise).
Every user in ``truth`` counts; a user with no recommendations scores 0. Definitions
(docs/recommendation.md): with hits at ranks r and n relevant items,

- precision@k = hits / k; recall@k = hits / n; hit_rate@k = 1 if any hit;
- nDCG@k = sum gain_r / log2(r + 1) over the top k, divided by the same sum for the ideal
  order of the user's relevant items (gain = relevance; 1 for binary);
- MAP@k = sum over hits of precision@r, divided by min(k, n);
- MRR@k = 1 / rank of the first hit (0 without one).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

METRICS = ("ndcg", "precision", "recall", "map", "hit_rate", "mrr")


def per_user(recs: pd.DataFrame, truth: pd.DataFrame, k: int) -> pd.DataFrame:
    """One row per truth user with each metric at ``k``."""
    if k < 1:
        raise ValueError("k must be >= 1")
    t = truth[["user_id", "item_id"]].copy()
    t["relevance"] = truth["relevance"].astype(float) if "relevance" in truth else 1.0
    t = t[t["relevance"] > 0].drop_duplicates(["user_id", "item_id"])
    users = pd.Index(t["user_id"].unique(), name="user_id")
    r = recs.loc[recs["rank"] <= k, ["user_id", "rank", "item_id"]]
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
