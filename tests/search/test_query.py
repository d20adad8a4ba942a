"""Spelling correction, edit distance, category intent, judgment labels."""

from __future__ import annotations

import numpy as np

from pipelines.data.generator.search import _typo
from pipelines.data.snapshot import Snapshot
from pipelines.search.config import SearchConfig
from pipelines.search.engine import SearchIndex
from pipelines.search.labels import judged
from pipelines.search.query import CategoryIntent, Speller, edit_distance
from pipelines.search.text import Analyzer, words
from tests.conftest import Shop


def test_edit_distance_counts_swaps_as_one_edit() -> None:
    assert edit_distance("shoe", "shoe", 2) == 0
    assert edit_distance("shoe", "sheo", 2) == 1  # adjacent swap
    assert edit_distance("shoe", "shoes", 2) == 1
    assert edit_distance("kitten", "sitting", 5) == 3
    assert edit_distance("abcdef", "uvwxyz", 2) == 3  # stops past the limit


def test_speller_prefers_fewer_edits_then_the_commoner_word() -> None:
    s = Speller({"shirt": 5, "short": 50, "shorts": 1, "skirt": 9})
    assert s.correct_word("shirt") == "shirt"  # known words stay
    assert s.correct_word("shrit") == "shirt"  # one swap beats two edits to "short"
    assert s.correct_word("shortt") == "short"  # 1 edit from short and from shorts: commoner
    assert s.correct_word("abc") == "abc"  # too short to correct
    assert s.correct_word("zzzzzz") == "zzzzzz"  # nothing near
    assert s.correct("a shrit and skrit") == ("shirt and skirt", True)  # words of 2+ letters


def test_speller_corrects_the_generators_planted_misspellings(small_shop: Shop) -> None:
    items = Snapshot.open(small_shop.path).read("items").to_pandas()
    texts = list(items["title"].fillna("") + " " + items["brand"].fillna(""))
    speller = Speller.of_texts(texts)
    vocab = sorted(w for w in speller.frequency if len(w) >= 4 and w.isalpha())
    rng = np.random.default_rng(0)
    fixed = total = 0
    for w in rng.choice(vocab, size=min(400, len(vocab)), replace=False):
        typo = _typo(str(w), int(rng.integers(0, 1 << 30)))
        if typo == w or typo in speller.frequency:
            continue  # the slip made another catalog word: nothing to correct
        total += 1
        fixed += speller.correct_word(typo) == w
    assert total > 100
    assert fixed / total >= 0.9, f"{fixed} of {total} planted misspellings corrected"


def test_category_intent_from_clicks() -> None:
    a = Analyzer()
    intent = CategoryIntent.learn(
        ["red shoes", "shoes", "kettle"], [[0, 0], [0, 1], [2]], ["Shoes", "Bags", "Kitchen"], a
    )
    d = intent.distribution(a.terms("shoes"))
    # "shoe": clicks 0,0 then 0,1 -> 3 on Shoes, 1 on Bags, prior 1 -> 3/5, 1/5
    np.testing.assert_allclose(d, [0.6, 0.2, 0.0])
    assert intent.distribution(a.terms("unknown")).sum() == 0
    again = CategoryIntent.from_json(intent.to_json())
    np.testing.assert_allclose(
        again.distribution(a.terms("red shoes")), intent.distribution(a.terms("red shoes"))
    )


def test_judgment_labels_start_at_zero_for_the_lowest_relevance(small_shop: Shop) -> None:
    snap = Snapshot.open(small_shop.path)
    items = snap.read("items").to_pandas()
    idx = SearchIndex.build(items, SearchConfig())
    data = judged(snap, idx)
    j = snap.read("judgments").to_pandas()
    low = j["relevance"].min()
    assert min(min(lab.values()) for lab in data.labels) == 0
    assert data.queries == sorted(j["query"].unique())
    q = data.queries[0]
    row = {i: r for r, i in enumerate(idx.item_ids)}
    for item, rel in j[j["query"] == q][["item_id", "relevance"]].itertuples(index=False):
        assert data.labels[0][row[item]] == int(np.floor(rel - low + 0.5))
    assert (data.truth["relevance"] >= 0).all()
    assert set(data.truth.columns) == {"user_id", "item_id", "relevance"}


def test_words_and_analyzer() -> None:
    assert words("Nike's Air-Max 90, 2 pack!") == ["nike", "air", "max", "90", "pack"]
    assert Analyzer().terms("the running shoes of a runner") == ["run", "shoe", "runner"]
    assert Analyzer(stem=False, stopwords=False).terms("the shoes") == ["the", "shoes"]
