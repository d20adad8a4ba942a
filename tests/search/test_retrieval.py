"""Lexical, semantic and fused retrieval on hand-made catalogs; the fallback chain."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.search import fusion
from pipelines.search.config import SearchConfig
from pipelines.search.engine import SearchIndex
from pipelines.search.lexical import LexicalIndex
from pipelines.search.text import Analyzer

CATALOG = pd.DataFrame(
    {
        "item_id": ["shoe1", "shoe2", "boot", "mouse", "pad", "kettle"],
        "title": [
            "Nike running shoes",
            "Trail running shoe for women",
            "Leather walking boots",
            "Wireless optical mouse",
            "Large mouse pad",
            "Electric kettle",
        ],
        "brand": ["Nike", "Salomon", "Clarks", "Logitech", None, "Russell"],
        "category": [
            "Sports/Shoes", "Sports/Shoes", "Fashion/Shoes", "Electronics/Mice",
            "Electronics/Accessories", "Home/Kitchen",
        ],
        "description": [
            "light shoes for road running", "grip on trails", "brown leather",
            "a quiet mouse that runs on batteries", "cloth pad", "boils water fast",
        ],
        "price": [80.0, 95.0, 120.0, 25.0, 9.0, 30.0],
    }
)  # fmt: skip


def index(**overrides: object) -> SearchIndex:
    return SearchIndex.build(CATALOG, SearchConfig(**overrides))  # type: ignore[arg-type]


def test_bm25_scores_equal_an_independent_computation() -> None:
    docs = ["red shoe", "red red shoe shoe shoe", "blue hat", "red hat with a red band"]
    analyzer = Analyzer(stem=False, stopwords=False)
    lex = LexicalIndex.build({"title": docs}, analyzer, k1=1.2, b=0.75)
    got = lex.field_scores(["red", "shoe"])["title"]
    tokens = analyzer.batch(docs)
    n, avgdl = len(docs), np.mean([len(t) for t in tokens])
    want = np.zeros(n)
    for term in ("red", "shoe"):
        df = sum(term in t for t in tokens)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))  # Lucene's BM25
        for d, t in enumerate(tokens):
            tf = t.count(term)
            want[d] += idf * tf / (tf + 1.2 * (1 - 0.75 + 0.75 * len(t) / avgdl))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert got[2] == 0.0


def test_stemming_matches_word_forms_and_can_be_switched_off() -> None:
    stemmed = index()
    c = stemmed.candidates("runs")
    assert {"shoe1", "shoe2", "mouse"} <= set(stemmed.item_ids[c.items][c.lexical > 0])
    plain = index(stem=False)
    c = plain.candidates("runs")
    assert set(plain.item_ids[c.items][c.lexical > 0]) == {"mouse"}


def test_field_weights_decide_between_a_title_and_a_description_match() -> None:
    # "mouse" is in the title of mouse and pad; "runs" only in the mouse's description
    by_title = index(field_weights={"title": 1.0, "description": 0.0}, min_cosine=1.0)
    c = by_title.candidates("running")
    assert set(by_title.item_ids[c.items]) == {"shoe1", "shoe2"}
    by_desc = index(field_weights={"title": 0.0, "description": 1.0}, min_cosine=1.0)
    c = by_desc.candidates("running")
    assert set(by_desc.item_ids[c.items]) == {"shoe1", "mouse"}


def test_brand_field_counts() -> None:
    idx = index(field_weights={"brand": 1.0}, min_cosine=1.0)
    c = idx.candidates("salomon")
    assert list(idx.item_ids[c.items]) == ["shoe2"]
    assert c.fields["brand"][0] > 0 and c.matches["brand"][0] == 1


def test_fusion_maths() -> None:
    np.testing.assert_allclose(fusion.minmax(np.array([2.0, 4.0, 3.0])), [0.0, 1.0, 0.5])
    np.testing.assert_array_equal(fusion.minmax(np.array([5.0, 5.0])), [0.0, 0.0])
    lex, sem = np.array([10.0, 0.0, 5.0]), np.array([0.2, 0.8, 0.5])
    np.testing.assert_allclose(
        fusion.convex(lex, sem, 0.25),
        [0.25 * 1 + 0.75 * 0, 0.25 * 0 + 0.75 * 1, 0.25 * 0.5 + 0.75 * 0.5],
    )
    np.testing.assert_array_equal(fusion.ranks(np.array([0.1, 0.9, 0.5, 0.9])), [4, 1, 3, 2])
    np.testing.assert_allclose(
        fusion.rrf(lex, sem, 60), [1 / 61 + 1 / 63, 1 / 63 + 1 / 61, 1 / 62 + 1 / 62]
    )


def test_alpha_moves_between_lexical_and_semantic_order() -> None:
    lexical_only = index(alpha=1.0)
    c = lexical_only.candidates("mouse")
    np.testing.assert_allclose(c.fused, fusion.minmax(c.lexical), atol=1e-6)
    semantic_only = index(alpha=0.0)
    c = semantic_only.candidates("mouse")
    np.testing.assert_allclose(c.fused, fusion.minmax(c.cosine), atol=1e-6)


def test_fallback_chain() -> None:
    idx = index()
    assert idx.candidates("running shoes").fallback is None
    c = idx.candidates("runnign shoes")
    assert c.fallback == "corrected" and c.corrected == "running shoes"
    assert idx.item_ids[c.items[0]] in {"shoe1", "shoe2"}
    c = idx.candidates("kett")  # no word holds it; "kettle" starts alike
    assert c.fallback == "relaxed" and "kettle" in set(idx.item_ids[c.items])
    c = idx.candidates("qqqq zzzz")
    assert c.fallback == "popular" and len(c) == len(CATALOG)


def test_category_intent_fallback_uses_the_query_log() -> None:
    queries = pd.DataFrame(
        {
            "text": ["gadget", "gadget deals", "gadget"],
            "clicked_item_ids": [["mouse"], ["pad"], ["mouse"]],
        }
    )
    idx = SearchIndex.build(
        CATALOG, SearchConfig(min_cosine=1.0), queries=queries, popularity=np.arange(6.0)
    )
    c = idx.candidates("gadget")
    assert c.fallback == "category"
    assert set(idx.item_ids[c.items]) == {"mouse", "pad"}
    dist = idx.intent.distribution(idx.analyzer.terms("gadget"))
    assert dist.sum() <= 1.0 and dist.max() > 0.4


def test_filters_apply_to_every_stage_and_only_they_can_empty_the_answer() -> None:
    idx = index()
    c = idx.candidates("shoes", category="sports")
    assert set(idx.item_ids[c.items]) <= {"shoe1", "shoe2"} and len(c)
    c = idx.candidates("qqqq", price_max=10.0)
    assert c.fallback == "popular" and list(idx.item_ids[c.items]) == ["pad"]
    assert len(idx.candidates("shoes", price_min=1000.0)) == 0
    assert len(idx.candidates("shoes", category="Garden")) == 0


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_a_non_empty_catalog_never_answers_an_empty_list(query: str) -> None:
    assert len(_shared_index().candidates(query)) > 0


_CACHE: dict[str, SearchIndex] = {}


def _shared_index() -> SearchIndex:
    if "i" not in _CACHE:
        _CACHE["i"] = index()
    return _CACHE["i"]


def test_saved_index_answers_the_same(tmp_path: Path) -> None:
    idx = index(synonyms_file=None)
    idx.save(tmp_path / "idx")
    again = SearchIndex.load(tmp_path / "idx")
    for q in ("running shoes", "mous", "kett", "zzz"):
        a, b = idx.candidates(q), again.candidates(q)
        np.testing.assert_array_equal(a.items, b.items)
        np.testing.assert_allclose(a.fused, b.fused, rtol=1e-6)
        assert a.fallback == b.fallback


def test_synonyms_expand_the_query(tmp_path: Path) -> None:
    syn = tmp_path / "synonyms.toml"
    syn.write_text('sneakers = ["shoes", "trainers"]\n')
    idx = index(synonyms_file=str(syn), min_cosine=1.0)
    c = idx.candidates("sneakers")
    assert {"shoe1", "shoe2"} <= set(idx.item_ids[c.items])
    assert idx.synonyms["shoes"] == ("sneakers",)  # both directions


def test_bad_synonyms_file_names_the_file_and_key(tmp_path: Path) -> None:
    from pipelines.errors import ConfigError

    bad = tmp_path / "syn.toml"
    bad.write_text('sneakers = "shoes"\n')
    with pytest.raises(ConfigError, match=r"syn\.toml.*'sneakers'"):
        index(synonyms_file=str(bad))
    with pytest.raises(ConfigError, match="does not exist"):
        index(synonyms_file=str(tmp_path / "missing.toml"))


def _with_images(images: list[list[float] | None]) -> pd.DataFrame:
    return CATALOG.assign(image_embedding=[None if v is None else np.array(v) for v in images])


# shoes look alike, the boots look like the shoes, the electronics alike, the kettle apart
IMAGES = [[1, 0, 0], [1, 0.1, 0], [0.9, 0.2, 0], [0, 1, 0], [0, 1, 0.1], None]


def test_image_similarity_is_mixed_into_the_semantic_score() -> None:
    plain = SearchIndex.build(CATALOG, SearchConfig(min_cosine=0.99))
    looks = SearchIndex.build(
        _with_images(IMAGES), SearchConfig(min_cosine=0.99, image_feedback=2, image_weight=0.5)
    )
    fields, text_cos, _ = plain.raw_scores("running shoes")
    _, mixed, _ = looks.raw_scores("running shoes")
    images = looks.images
    assert images is not None and looks.has_image is not None
    assert list(looks.has_image) == [True] * 5 + [False]
    # the query's image side: the mean image of its 2 best first-pass matches (the shoes)
    lexical = sum(w * fields[f] for f, w in plain.cfg.field_weights.items())
    first = list(np.argsort(-lexical)[:2])
    assert sorted(first) == [0, 1]
    q = images[first].mean(axis=0)
    q /= np.linalg.norm(q)
    want = 0.5 * text_cos[:5] + 0.5 * images[:5] @ q
    np.testing.assert_allclose(mixed[:5], want, rtol=1e-5, atol=1e-6)
    assert mixed[5] == pytest.approx(text_cos[5])  # no image: the text cosine alone
    # the boots look like the shoes: closer than the mouse, which looks unlike them
    assert mixed[2] - text_cos[2] > mixed[3] - text_cos[3]
    off = SearchIndex.build(_with_images(IMAGES), SearchConfig(min_cosine=0.99, image_weight=0))
    np.testing.assert_allclose(off.raw_scores("running shoes")[1], text_cos, atol=1e-6)


def test_a_query_nothing_matches_gets_no_image_side(tmp_path: Path) -> None:
    looks = SearchIndex.build(_with_images(IMAGES), SearchConfig())
    c = looks.candidates("qwxz")
    assert c.fallback == "popular"  # the chain is unchanged by images
    looks.save(tmp_path / "ix")
    again = SearchIndex.load(tmp_path / "ix")
    assert again.images is not None
    np.testing.assert_allclose(
        again.raw_scores("running shoes")[1], looks.raw_scores("running shoes")[1]
    )


def test_image_embeddings_of_another_length_are_refused_naming_the_row() -> None:
    bad = [[1, 0, 0], [1, 0], None, None, None, None]
    with pytest.raises(ValueError, match=r"items row 2 \(item shoe2\), column image_embedding"):
        SearchIndex.build(_with_images(bad), SearchConfig())


# -- pool mode (large catalogs): FAISS inverted files and the lexical top ----------------


def _generated_catalog() -> pd.DataFrame:
    from pipelines.data.generator import GeneratorConfig
    from pipelines.data.generator.world import build_world, items_table

    world = build_world(GeneratorConfig(users=50, items=1_500, events=1_000, seed=5))
    return items_table(world).to_pandas()


POOL_QUERIES = ("running shoes", "velora", "smart cat litter", "blue", "dres", "qqqq zzzz", "")


def test_a_pool_that_holds_every_item_answers_exactly_like_the_exact_mode(tmp_path: Path) -> None:
    items = _generated_catalog()
    assert items["image_embedding"].notna().any()  # the image side takes part too
    exact = SearchIndex.build(items, SearchConfig(image_weight=0.5, ann_min_items=0))
    pooled = SearchIndex.build(
        items,
        SearchConfig(
            image_weight=0.5, ann_min_items=1_000, ann_pool=len(items), ann_lists=8, ann_probe=8
        ),
    )
    assert exact.ann == {} and set(pooled.ann) == {"text", "images"}
    texts = [*POOL_QUERIES, *items["title"].str.lower().head(20)]
    filters = [{}, {"category": items["category"].iat[0].split("/")[0]}, {"price_max": 20.0}]
    for q in texts:
        for f in filters:
            a, b = exact.candidates(q, **f), pooled.candidates(q, **f)  # type: ignore[arg-type]
            assert a.fallback == b.fallback, (q, f)
            np.testing.assert_array_equal(a.items, b.items, err_msg=f"{q!r} {f}")
            np.testing.assert_allclose(a.fused, b.fused, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(a.cosine, b.cosine, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(a.intent, b.intent)
    pooled.save(tmp_path / "ix")
    assert (tmp_path / "ix" / "ann_text.faiss").is_file()
    again = SearchIndex.load(tmp_path / "ix")
    assert set(again.ann) == {"text", "images"}
    for q in texts[:8]:
        np.testing.assert_array_equal(again.candidates(q).items, pooled.candidates(q).items)


def test_a_small_pool_keeps_the_best_matches_the_filters_and_the_fallbacks() -> None:
    items = _generated_catalog()
    exact = SearchIndex.build(items, SearchConfig(ann_min_items=0))
    pooled = SearchIndex.build(items, SearchConfig(ann_min_items=1_000, ann_pool=200))
    overlap = []
    for q in items["title"].str.lower().head(40):
        a, b = exact.candidates(q, n=10), pooled.candidates(q, n=10)
        overlap.append(len(set(a.items) & set(b.items)) / 10)
        # the lexical side of the pool is exact: the best lexical match is never lost
        assert exact.item_ids[a.items[np.argmax(a.lexical)]] in set(pooled.item_ids[b.items])
    assert np.mean(overlap) >= 0.9, overlap
    top = items["category"].iat[0].split("/")[0]
    c = pooled.candidates("shoes", category=top)
    assert len(c) and all(str(x).startswith(top) for x in items["category"].to_numpy()[c.items])
    assert pooled.candidates("qqqq zzzz").fallback == "popular"
    assert len(pooled.candidates("qqqq", price_min=1e9)) == 0


def test_best_positions_equal_a_full_lexsort() -> None:
    rng = np.random.default_rng(1)
    for trial in range(300):
        m, n = int(rng.integers(0, 300)), int(rng.integers(1, 40))
        scores = rng.integers(0, 6, m).astype(float) if trial % 2 else rng.normal(size=m)
        keys = rng.permutation(m)
        np.testing.assert_array_equal(fusion.best(scores, keys, n), np.lexsort((keys, -scores))[:n])


def test_one_query_embeds_exactly_like_a_batch() -> None:
    """Served queries take the dense single-text path; it must give the batch's vectors."""
    embedder = index(synonyms_file=None).embedder
    queries = ["running shoes", "Wireless MOUSE mouse", "", "zzz qqq", "the of a", "boots!"]
    batch = embedder.transform(queries)
    one = np.vstack([embedder.transform([q]) for q in queries])
    np.testing.assert_array_equal(one, batch)
    assert not one[2].any() and not one[3].any()  # nothing known: the zero vector
    assert np.linalg.norm(one[0]) == pytest.approx(1.0, abs=1e-6)


def test_title_words_are_kept_and_phrase_matches_read_them() -> None:
    from pipelines.search.ranker import phrase_matches

    idx = index(synonyms_file=None)
    words, pairs = idx.title_words(1)  # "Trail running shoe for women"
    assert words == {"trail", "running", "shoe", "women"}  # "for": a stop word
    assert pairs == {("trail", "running"), ("running", "shoe"), ("shoe", "women")}
    assert idx.title_words(1) is idx.title_words(1)  # computed once
    c = idx.candidates("running shoe")
    bigram, exact = phrase_matches(idx, c)
    at = {str(idx.item_ids[r]): j for j, r in enumerate(c.items)}
    assert exact[at["shoe2"]] == 1.0 and bigram[at["shoe2"]] == 1.0
    assert exact[at["shoe1"]] == 0.5 and bigram[at["shoe1"]] == 0.0  # "shoes", not "shoe"
