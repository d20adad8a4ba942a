"""Buying again and baskets: the repeat policy, buy-again scores and co-occurrence on
hand-made data, checked against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipelines.candidates import CandidateConfig
from pipelines.candidates.cooccur import CooccurGenerator
from pipelines.candidates.repeat import RepeatGenerator
from pipelines.candidates.repeats import repeat_stats
from pipelines.candidates.sessions import session_cooccurrence
from pipelines.errors import ConfigError
from tests.candidates.test_candidates import NOW, context, timeline


def shop(events: list[tuple[int, int, str, float]], n_users: int) -> object:
    """Items 0-1 in Grocery/Milk, 2-3 in Electronics/TV."""
    tl = timeline(events, n_users, 4)
    tl.items["category"] = ["Grocery/Milk", "Grocery/Milk", "Electronics/TV", "Electronics/TV"]
    codes, cats = pd.factorize(tl.items["category"])
    tl.category, tl.categories = codes.astype(np.int32), np.asarray(cats, dtype=object)
    return tl


def grocery_and_tvs() -> object:
    """30 shoppers buy milk (item 0) every 30 days; each also buys one television once."""
    events = []
    for u in range(30):
        events += [(u, 0, "purchase", d) for d in (10.0, 40.0, 70.0)]
        events.append((u, 2 + u % 2, "purchase", 20.0 + u))
        events.append((u, 2 + u % 2, "view", 19.0 + u))
    return shop(events, 30)


def test_auto_allows_consumables_and_never_reshows_a_durable() -> None:
    tl = grocery_and_tvs()
    r = repeat_stats(tl, slice(0, len(tl.ts)), NOW, CandidateConfig())
    # Grocery: 30 of 30 buyers bought again, shrunk by 20 pseudo-buyers: 30 / 50
    assert r.policy["Grocery"] == {"rate": 0.6, "buyers": 30, "repeats": "allowed", "rule": "auto"}
    assert r.policy["Electronics"]["repeats"] == "never"
    assert r.policy["Electronics"]["rate"] == 0.0
    assert r.allowed.tolist() == [True, True, False, False]
    assert r.item_rate[0] == 1.0 and r.item_rate[2] == 0.0
    assert r.item_interval[0] == 30.0 and math.isnan(r.item_interval[2])
    # overrides per top-level category, and the plain modes
    cfg = CandidateConfig(repeat_categories={"Electronics": "always", "Grocery": "never"})
    assert repeat_stats(tl, slice(0, len(tl.ts)), NOW, cfg).allowed.tolist() == [
        False, False, True, True,
    ]  # fmt: skip
    never = repeat_stats(tl, slice(0, len(tl.ts)), NOW, CandidateConfig(repeats="never"))
    assert not never.allowed.any()
    always = repeat_stats(tl, slice(0, len(tl.ts)), NOW, CandidateConfig(repeats="always"))
    assert always.allowed.all()


def test_a_category_with_little_evidence_is_not_allowed() -> None:
    # 2 buyers, 1 of them bought again: 1 / (2 + 20) < 5 %
    events = [(0, 0, "purchase", 10.0), (0, 0, "purchase", 40.0), (1, 0, "purchase", 10.0)]
    tl = shop(events, 2)
    r = repeat_stats(tl, slice(0, len(tl.ts)), NOW, CandidateConfig(repeat_min_rate=0.05))
    assert r.policy["Grocery"]["repeats"] == "never"
    assert r.policy["Grocery"]["rate"] == pytest.approx(1 / 22, abs=1e-4)


def test_a_catalog_nobody_buys_twice_comes_out_never() -> None:
    # MovieLens-like: every (user, item) once
    events = [(u, i, "purchase", float(u + i)) for u in range(20) for i in range(4) if (u + i) % 2]
    tl = shop(events, 20)
    r = repeat_stats(tl, slice(0, len(tl.ts)), NOW, CandidateConfig())
    assert not r.allowed.any()
    assert {p["repeats"] for p in r.policy.values()} == {"never"}


def test_several_rows_of_one_basket_are_one_purchase_occasion() -> None:
    events = [(0, 0, "purchase", 10.0), (0, 0, "purchase", 10.2), (0, 0, "purchase", 50.0)]
    tl = shop(events, 1)
    r = repeat_stats(tl, slice(0, len(tl.ts)), NOW, CandidateConfig())
    assert r.buys[0, 0] == 2.0  # day 10 (two rows) and day 50
    assert r.mean_gap_days[0, 0] == pytest.approx(40.0)


def test_buy_again_scores_match_the_formula_by_hand() -> None:
    events = []
    for u in range(30):
        events += [(u, 0, "purchase", d) for d in (10.0, 40.0, 70.0)]
    events += [(30, 0, "purchase", 90.0), (30, 2, "purchase", 95.0), (31, 2, "view", 50.0)]
    tl = shop(events, 32)
    cfg = CandidateConfig()
    ctx = context(tl, cfg)
    gen = RepeatGenerator(cfg)
    gen.fit(ctx)
    batch = ctx.batch(["u0", "u30", "u31", "nobody"])
    scores = gen.scores(batch)
    # u0: 3 occasions, 30 days since the last, own gap 30 -> due ratio 1
    assert scores[0, 0] == pytest.approx(math.log(4) * 1.0 * 0.5 ** (30 / 90), rel=1e-5)
    # u30: bought once 10 days ago: the item's typical gap (30 days) -> ratio 1/3
    assert scores[1, 0] == pytest.approx(math.log(2) * (0.5 + 0.5 / 3) * 0.5 ** (10 / 90), rel=1e-5)
    # the television: never again (its category has no repeat buyer)
    assert np.isnan(scores[1, 2])
    assert np.isnan(scores[0, 1]) and np.isnan(scores[0, 3])  # never bought: not listed
    assert gen.answers(batch).tolist() == [True, True, False, False]
    idx, _ = gen.top(batch, 3)
    assert idx[0].tolist() == [0, -1, -1]  # only what they bought, never padded


def test_session_cooccurrence_by_hand() -> None:
    # sessions (one per shopper and day): u0 day 1 {0, 1}, u0 day 2 {2}, u1 day 1 {0, 2}
    events = [
        (0, 0, "purchase", 1.1), (0, 1, "view", 1.2), (0, 2, "purchase", 2.1),
        (1, 0, "view", 1.3), (1, 2, "add_to_cart", 1.4),
    ]  # fmt: skip
    tl = timeline(events, 2, 4)
    cfg = CandidateConfig(cooccur_next_weight=0.5)
    rel = session_cooccurrence(tl, slice(0, len(tl.ts)), cfg).toarray()
    # same session: (0,1) 1, (0,2) 1; u0's next session: (0,2) and (1,2) each + 0.5 / 2;
    # divided by sqrt(sessions holding i * sessions holding j): item 0 in 2, 1 in 1, 2 in 2
    assert rel[0, 1] == pytest.approx(1 / math.sqrt(2))
    assert rel[0, 2] == pytest.approx(1.25 / 2)
    assert rel[1, 2] == pytest.approx(0.25 / math.sqrt(2))
    np.testing.assert_allclose(rel, rel.T)
    assert rel[3].sum() == 0 and np.diag(rel).sum() == 0
    # an anonymous session with item 1 gets item 1's relations, not item 1 itself
    ctx = context(tl, cfg)
    gen = CooccurGenerator(cfg)
    gen.fit(ctx)
    s = gen.scores(ctx.batch(["walk-in"], recent_items=[["i1"]]))[0]
    assert s[0] == pytest.approx(rel[1, 0]) and s[2] == pytest.approx(rel[1, 2])
    assert np.isnan(s[1]) and np.isnan(s[3])
    pruned = session_cooccurrence(tl, slice(0, len(tl.ts)), CandidateConfig(cooccur_neighbours=1))
    assert (np.diff(pruned.indptr) <= 1).all()
    assert pruned[0].indices.tolist() == [1]  # item 0's strongest relation


def test_repeat_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="repeats must be one of auto, never, always"):
        CandidateConfig(repeats="sometimes")
    with pytest.raises(ConfigError, match="repeat_categories values"):
        CandidateConfig(repeat_categories={"TV": "no"})
