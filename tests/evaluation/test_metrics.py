"""Ranking metrics against hand-computed values."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from pipelines.ranking.metrics import (
    catalog_coverage,
    intra_list_diversity,
    novelty,
    per_user,
    ranking_metrics,
)


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


def test_ties_in_rank_break_by_item_id_and_repeated_items_count_once() -> None:
    # b and a share rank 1: a comes first; the repeated a is dropped, so c is at 3
    r = pd.DataFrame({"user_id": ["u"] * 4, "rank": [1, 1, 2, 3], "item_id": ["b", "a", "a", "c"]})
    table = per_user(r, truth({"u": ["c"]}), k=3)
    assert table.loc["u", "mrr"] == pytest.approx(1 / 3)
    assert table.loc["u", "ndcg"] == pytest.approx(1 / math.log2(4))
    assert per_user(r, truth({"u": ["c"]}), k=2).loc["u", "hit_rate"] == 0.0


def test_a_user_with_no_relevant_items_is_not_counted() -> None:
    t = pd.DataFrame({"user_id": ["u1", "u2"], "item_id": ["a", "a"], "relevance": [1.0, 0.0]})
    table = per_user(recs({"u1": ["a"], "u2": ["a"]}), t, k=5)
    assert list(table.index) == ["u1"]
    assert ranking_metrics(recs({"u2": ["a"]}), t[t["user_id"] == "u2"], k=5)["ndcg"] == 0.0


def test_catalog_coverage_counts_distinct_catalog_items_in_the_top_k() -> None:
    r = recs({"u1": ["a", "b", "z"], "u2": ["a", "c"]})
    catalog = pd.Index(["a", "b", "c", "d"])
    assert catalog_coverage(r, catalog, k=2) == pytest.approx(3 / 4)  # a, b, c
    assert catalog_coverage(r, catalog, k=1) == pytest.approx(1 / 4)
    assert catalog_coverage(r, catalog, k=3) == pytest.approx(3 / 4)  # z is not in the catalog


def test_novelty_is_the_mean_self_information_with_add_one_smoothing() -> None:
    popularity = pd.Series({"a": 9, "b": 1})  # of 9 users; c unseen
    per = novelty(recs({"u": ["a", "b", "c"]}), popularity, n_users=9, k=3)
    expected = (-math.log2(10 / 10) - math.log2(2 / 10) - math.log2(1 / 10)) / 3
    assert per["u"] == pytest.approx(expected)
    assert novelty(recs({"u": ["a"]}), popularity, n_users=9, k=3)["u"] == pytest.approx(0.0)


def test_intra_list_diversity_by_category_path() -> None:
    category = pd.Series({"a": "A/B/C", "b": "A/B/D", "c": "E", "d": "A/B/C"})
    ild = intra_list_diversity(
        recs({"u": ["a", "b", "c"], "v": ["a", "d"], "w": ["a"]}), category, k=3
    )
    # pairs of u: (a, b) 1 - 2/3, (a, c) 1, (b, c) 1
    assert ild["u"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert ild["v"] == pytest.approx(0.0)  # one leaf category
    assert "w" not in ild.index  # a single item has no pairs
    # the cut at k: only a and b remain
    assert intra_list_diversity(recs({"u": ["a", "b", "c"]}), category, k=2)["u"] == pytest.approx(
        1 / 3
    )
