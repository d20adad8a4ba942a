"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines.metrics import per_user, ranking_metrics


def recs(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, r + 1, i) for u, items in rows.items() for r, i in enumerate(items)],
        columns=["user_id", "rank", "item_id"],
    )


def truth(rows: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [(u, i) for u, items in rows.items() for i in items], columns=["user_id", "item_id"]
    )


def test_one_user_by_hand() -> None:
    # relevant {a, c, x}; list a b c d: hits at ranks 1 and 3
    m = ranking_metrics(recs({"u": ["a", "b", "c", "d"]}), truth({"u": ["a", "c", "x"]}), k=4)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert m["ndcg"] == pytest.approx(dcg / idcg)
    assert m["precision"] == pytest.approx(2 / 4)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["map"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert m["hit_rate"] == 1.0
    assert m["mrr"] == 1.0


def test_averages_over_truth_users_and_edge_cases() -> None:
    r = recs({"u1": ["a", "b"], "u2": ["z", "y", "x"], "u4": ["q"]})
    t = truth({"u1": ["b"], "u2": ["q"], "u3": ["a"]})  # u3 has no list, u4 no truth
    table = per_user(r, t, k=10)
    assert set(table.index) == {"u1", "u2", "u3"}
    assert table.loc["u1", "ndcg"] == pytest.approx(1 / math.log2(3))
    assert table.loc["u1", "mrr"] == pytest.approx(0.5)
    assert table.loc["u1", "precision"] == pytest.approx(1 / 10)  # k larger than the list
    assert table.loc["u1", "map"] == pytest.approx(0.5)  # min(k, n_relevant) = 1
    assert (table.loc[["u2", "u3"]] == 0).all().all()
    m = ranking_metrics(r, t, k=10)
    assert m["ndcg"] == pytest.approx(table["ndcg"].mean())
    assert m["hit_rate"] == pytest.approx(1 / 3)


def test_cutoff_and_graded_relevance() -> None:
    r = recs({"u": ["a", "b", "c"]})
    t = pd.DataFrame({"user_id": ["u", "u"], "item_id": ["b", "c"], "relevance": [1.0, 3.0]})
    m = ranking_metrics(r, t, k=2)  # c (rank 3) is cut off
    assert m["precision"] == pytest.approx(0.5)
    ideal = 3 + 1 / math.log2(3)
    assert m["ndcg"] == pytest.approx((1 / math.log2(3)) / ideal)
    with pytest.raises(ValueError):
        ranking_metrics(r, t, k=0)


def test_ties_in_truth_and_duplicates_count_once() -> None:
    r = recs({"u": ["a", "b"]})
    t = truth({"u": ["a", "a", "b"]})
    m = ranking_metrics(r, t, k=2)
    assert m["ndcg"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(1.0)
