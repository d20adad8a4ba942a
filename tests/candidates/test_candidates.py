"""Candidate generators on small hand-made data, checked against direct computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pipelines.candidates import GENERATORS, CandidateConfig, Context, History, SideInfo
from pipelines.candidates.als import ALSGenerator
from pipelines.candidates.base import top_n
from pipelines.candidates.bpr import FOLD_IN_RIDGE, BPRGenerator
from pipelines.candidates.content import ContentGenerator
from pipelines.candidates.itemitem import ItemItemGenerator, ease
from pipelines.candidates.popularity import PopularityGenerator, TrendingGenerator
from pipelines.candidates.sessions import keep_latest
from pipelines.data.contract import EVENT_TYPES
from pipelines.data.timeline import DAY, Timeline

NOW = 100 * DAY


def timeline(
    events: list[tuple[int, int, str, float]],
    n_users: int,
    n_items: int,
    *,
    age: list[float] | None = None,
    gender: list[str | None] | None = None,
    created_day: list[float] | None = None,
) -> Timeline:
    """A Timeline from (user, item, event type, day) tuples."""
    ev = sorted(events, key=lambda e: e[3])
    users = pd.DataFrame(
        {
            "user_id": [f"u{i}" for i in range(n_users)],
            "age": age if age is not None else [np.nan] * n_users,
            "gender": gender if gender is not None else [None] * n_users,
            "region": [None] * n_users,
            "signup_s": 0.0,
        }
    )
    items = pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(n_items)],
            "title": [f"item {j}" for j in range(n_items)],
            "description": "",
            "category": ["A/x" if j % 2 == 0 else "B/y" for j in range(n_items)],
            "brand": None,
            "price": 10.0,
            "created_s": [d * DAY for d in created_day] if created_day else 0.0,
        }
    )
    cat_codes, cats = pd.factorize(items["category"])
    return Timeline(
        users=users,
        items=items,
        user=np.array([e[0] for e in ev], dtype=np.int32),
        item=np.array([e[1] for e in ev], dtype=np.int32),
        etype=np.array([EVENT_TYPES.index(e[2]) for e in ev], dtype=np.int8),
        ts=np.array([e[3] * DAY for e in ev], dtype=np.float64),
        category=cat_codes.astype(np.int32),
        categories=np.asarray(cats, dtype=object),
        brand=np.full(n_items, -1, dtype=np.int32),
        brands=np.array([], dtype=object),
        order=np.arange(len(ev)),
    )


def context(
    tl: Timeline,
    cfg: CandidateConfig,
    content: np.ndarray | None = None,
    segment: np.ndarray | None = None,
) -> Context:
    history = History.from_timeline(tl, slice(0, len(tl.ts)), NOW, cfg)
    side = SideInfo(
        content=content,
        age=tl.users["age"].to_numpy(dtype=float),
        gender=tl.users["gender"].to_numpy(dtype=object),
        region=tl.users["region"].to_numpy(dtype=object),
        segment=segment if segment is not None else np.full(tl.n_users, -1),
    )
    return Context(
        history, side, tl.users["user_id"].to_numpy(object), tl.items["item_id"].to_numpy(object)
    )


def random_events(
    n_users: int, n_items: int, per_user: int, seed: int
) -> list[tuple[int, int, str, float]]:
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        # two taste groups: even users like low item ids, odd users high ones
        pool = np.arange(n_items // 2) if u % 2 == 0 else np.arange(n_items // 2, n_items)
        for i in rng.choice(pool, size=per_user, replace=False):
            out.append((u, int(i), "view", float(rng.uniform(1, 90))))
    return out


def test_history_weights_decay_and_latest_times() -> None:
    cfg = CandidateConfig(half_life_days=10.0)
    tl = timeline(
        [(0, 0, "view", 90.0), (0, 0, "purchase", 80.0), (1, 1, "add_to_cart", 99.0)], 2, 3
    )
    h = History.from_timeline(tl, slice(0, 3), NOW, cfg)
    # view 10 days ago: 1 * 0.5; purchase 20 days ago: 5 * 0.25
    assert h.matrix[0, 0] == pytest.approx(0.5 + 1.25)
    assert h.matrix[1, 1] == pytest.approx(3 * 0.5**0.1)
    assert h.last_seen[0, 0] == pytest.approx(90 * DAY - NOW + 1)
    assert h.user_events.tolist() == [2, 1]
    assert h.popularity.tolist() == [1, 1, 0]
    with pytest.raises(ValueError, match="before its time"):
        History.from_timeline(tl, slice(0, 3), 95 * DAY, cfg)


def test_ease_matches_the_per_column_constrained_solution() -> None:
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 8)) < 0.3).astype(np.float32))
    lam = 5.0
    b = ease(x, lam)
    dense = x.toarray().astype(np.float64)
    for j in range(8):
        others = [c for c in range(8) if c != j]
        xo = dense[:, others]
        # min ||x_j - X_{-j} w||^2 + lam ||w||^2, i.e. column j of B with B_jj = 0
        w = np.linalg.solve(xo.T @ xo + lam * np.eye(7), xo.T @ dense[:, j])
        assert b[j, j] == 0
        np.testing.assert_allclose(b[others, j], w, rtol=1e-4, atol=1e-5)


def test_itemitem_switches_to_knn_for_large_catalogs_and_scores_rows() -> None:
    tl = timeline(random_events(30, 20, 6, seed=1), 30, 20)
    small = ItemItemGenerator(CandidateConfig(ease_max_items=100, ease_lambda=1.0))
    small.fit(context(tl, small.cfg))
    assert small.method == "ease"
    big = ItemItemGenerator(CandidateConfig(ease_max_items=10, knn_neighbours=5))
    ctx = context(tl, big.cfg)
    big.fit(ctx)
    assert big.method == "knn"
    assert isinstance(big.weights, sp.csr_matrix)
    assert np.diff(big.weights.indptr).max() <= 5
    batch = ctx.batch(["u0"])
    expected = (batch.rows > 0).astype(np.float32) @ big.weights
    np.testing.assert_allclose(big.scores(batch), expected.toarray(), rtol=1e-6)
    # taste groups: user 0 (low ids) gets low-id items recommended
    top = [int(i[1:]) for i, _ in small.recommend(["u0"], 4)[0]]  # 4 unseen low-id items left
    assert all(i < 10 for i in top)


def test_als_folds_in_a_new_user_with_the_least_squares_solution() -> None:
    cfg = CandidateConfig(als_factors=4, als_iterations=10, als_alpha=2.0, als_regularization=0.1)
    tl = timeline(random_events(40, 16, 5, seed=2), 40, 16)
    ctx = context(tl, cfg)
    gen = ALSGenerator(cfg)
    gen.fit(ctx)
    batch = ctx.batch(["someone-new"], recent_items=[["i1", "i3", "i5"]])
    assert batch.codes.tolist() == [-1]
    folded = gen.user_vectors(batch)[0]
    y = gen.model.item_factors.astype(np.float64)
    # Hu et al.: minimise sum_i c_i (p_i - x.y_i)^2 + reg |x|^2 with c_i = 1 + alpha * w_i
    # (w = 1 for each listed item, 0 elsewhere) and p_i = 1 where w_i > 0
    w = np.zeros(16)
    w[[1, 3, 5]] = 1.0
    c = 1 + cfg.als_alpha * w
    a = y.T @ np.diag(c) @ y + cfg.als_regularization * np.eye(4)
    rhs = y.T @ (c * (w > 0))
    np.testing.assert_allclose(folded, np.linalg.solve(a, rhs), rtol=1e-3, atol=1e-4)
    # a known user keeps the trained factors
    known = ctx.batch(["u0"])
    np.testing.assert_allclose(gen.user_vectors(known)[0], gen.model.user_factors[0])
    # the folded-in user's own items are excluded and the rest come from their taste group
    idx, _ = gen.top(batch, 4)
    assert not set(idx[0]) & {1, 3, 5}


def test_bpr_fold_in_is_the_ridge_solution_over_item_factors() -> None:
    cfg = CandidateConfig(bpr_factors=4, bpr_iterations=20)
    tl = timeline(random_events(40, 16, 5, seed=3), 40, 16)
    ctx = context(tl, cfg)
    gen = BPRGenerator(cfg)
    gen.fit(ctx)
    batch = ctx.batch(["new"], recent_items=[["i2", "i4"]])
    vec = gen.user_vectors(batch)[0]
    v = gen.model.item_factors[[2, 4], :-1].astype(np.float64)
    bias = gen.model.item_factors[[2, 4], -1]
    expected = np.linalg.solve(v.T @ v + FOLD_IN_RIDGE * np.eye(v.shape[1]), v.T @ (1 - bias))
    np.testing.assert_allclose(vec[:-1], expected, rtol=1e-4, atol=1e-5)
    assert vec[-1] == 1.0


def test_content_profile_is_the_weighted_mean_of_recent_items() -> None:
    cfg = CandidateConfig(content_history=2)
    content = np.eye(4, dtype=np.float32)
    content[3] = np.array([1, 1, 0, 0], dtype=np.float32) / np.sqrt(2)
    # user 0 touched items 0 (long ago), 1 and 2 (recently): only 1 and 2 count
    tl = timeline([(0, 0, "view", 10.0), (0, 1, "view", 95.0), (0, 2, "view", 96.0)], 1, 4)
    ctx = context(tl, cfg, content=content)
    gen = ContentGenerator(cfg)
    gen.fit(ctx)
    prof = gen.profiles(ctx.batch(["u0"]))[0]
    w1, w2 = ctx.history.matrix[0, 1], ctx.history.matrix[0, 2]
    expected = np.array([0, w1, w2, 0]) / np.hypot(w1, w2)
    np.testing.assert_allclose(prof, expected, rtol=1e-5)
    scores = gen.scores(ctx.batch(["u0"]))[0]
    assert scores[3] == pytest.approx(w1 / np.hypot(w1, w2) / np.sqrt(2), rel=1e-5)


def test_content_vectors_average_text_and_image_cosines() -> None:
    text = np.array([[1, 0], [1, 1]], dtype=np.float32)
    image = np.array([[0, 1, 0], [0, 1, 0]], dtype=np.float32)
    v = SideInfo.content_vectors(text, image)
    text_cos = 1 / np.sqrt(2)
    assert float(v[0] @ v[1]) == pytest.approx((text_cos + 1.0) / 2, rel=1e-6)
    no_image = SideInfo.content_vectors(text, np.zeros((2, 3), dtype=np.float32))
    assert float(no_image[0] @ no_image[1]) == pytest.approx(text_cos, rel=1e-6)


def test_cold_start_users_get_their_demographic_cell_then_global_popularity() -> None:
    # women 25-34 buy item 0, men 45-54 buy item 1; item 2 is globally the most popular
    events, age, gender = [], [], []
    for u in range(30):
        woman = u < 10
        man = 10 <= u < 20
        age.append(30.0 if woman else 50.0 if man else 70.0)
        gender.append("F" if woman else "M" if man else "F")
        events.append((u, 0 if woman else 1 if man else 2, "purchase", 50.0))
        if u >= 12:
            events.append((u, 2, "view", 60.0))
    age += [31.0, 52.0, np.nan]
    gender += ["F", "M", None]
    tl = timeline(events, 33, 4, age=age, gender=gender)
    cfg = CandidateConfig(popularity_smoothing=1.0)
    ctx = context(tl, cfg)
    gen = PopularityGenerator(cfg)
    gen.fit(ctx)
    # users 30-32 have no events: a woman of 31, a man of 52, someone unknown
    recs = gen.recommend(["u30", "u31", "u32"], 1)
    assert recs[0][0][0] == "i0"
    assert recs[1][0][0] == "i1"
    assert recs[2][0][0] == "i2"  # no demographics: global popularity
    # an id the model never saw, with demographics given at request time
    batch = ctx.batch(["visitor"], age=np.array([29.0]), gender=np.array(["F"], dtype=object))
    idx, _ = gen.top(batch, 1)
    assert idx[0, 0] == 0
    # the smoothed rate for the women's cell: (10 + m * p) / (10 + m)
    p = ctx.history.popularity[0] / 30
    cell = gen._demo_cell(np.array([30.0]), np.array(["F"], dtype=object))[0]
    assert gen.demo_rates[cell, 0] == pytest.approx((10 + p) / 11, rel=1e-5)


def test_segment_popularity_and_trending() -> None:
    events = [(u, u % 2, "view", 10.0) for u in range(20)] + [(0, 3, "purchase", 98.0)]
    tl = timeline(events, 21, 4)
    seg = np.array([u % 2 for u in range(20)] + [1])
    cfg = CandidateConfig(trending_days=7.0)
    ctx = context(tl, cfg, segment=seg)
    pop = PopularityGenerator(cfg)
    pop.fit(ctx)
    assert pop.recommend(["u20"], 1)[0][0][0] == "i1"  # segment 1 touched item 1
    trend = TrendingGenerator(cfg)
    trend.fit(ctx)
    assert trend.recommend(["u5"], 1)[0][0][0] == "i3"  # the only event in the last 7 days


def test_generators_that_need_history_say_nothing_for_users_without_it() -> None:
    tl = timeline(random_events(10, 8, 3, seed=4), 11, 8)
    cfg = CandidateConfig(als_factors=2, bpr_factors=2, bpr_iterations=5)
    ctx = context(tl, cfg)
    for cls in (ALSGenerator, BPRGenerator, ItemItemGenerator, ContentGenerator):
        gen = cls(cfg)
        gen.fit(ctx)
        assert gen.recommend(["u10"], 5) == [[]], cls.name
        assert gen.recommend(["never-seen"], 5) == [[]], cls.name


def test_items_not_yet_created_are_never_candidates() -> None:
    tl = timeline(
        [(0, 0, "view", 5.0), (1, 0, "view", 6.0), (1, 1, "view", 7.0)],
        2,
        3,
        created_day=[0, 0, 150],
    )
    ctx = context(tl, CandidateConfig())
    assert ctx.history.item_exists.tolist() == [True, True, False]
    gen = TrendingGenerator(CandidateConfig())
    gen.fit(ctx)
    assert [i for i, _ in gen.recommend(["u0"], 5)[0]] == ["i1"]


def test_top_n_and_keep_latest() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7]], dtype=np.float32)
    banned = sp.csr_matrix(np.array([[0, 1, 0, 0]]))
    idx, best = top_n(scores, 3, banned, np.array([True, True, True, False]))
    assert idx.tolist() == [[2, 0, -1]]
    assert np.isnan(best[0, 2])
    rows = sp.csr_matrix(np.array([[1.0, 2.0, 3.0]]))
    times = sp.csr_matrix(np.array([[-5.0, -1.0, -3.0]]))
    kept = keep_latest(rows, times, 2)
    assert kept.toarray().tolist() == [[0.0, 2.0, 3.0]]


def test_top_n_on_a_wide_catalog_equals_a_full_sort() -> None:
    """The block-maxima selection of wide arrays lists exactly the best n per row, with
    banned, disallowed, NaN and tied scores, and rows with fewer eligible items."""
    from pipelines.candidates.base import SELECT_MIN_ITEMS

    rng = np.random.default_rng(3)
    m = SELECT_MIN_ITEMS + 1234
    scores = rng.standard_normal((6, m)).astype(np.float32)
    scores[1] = np.round(scores[1])  # many ties
    scores[2, rng.choice(m, 500, replace=False)] = np.nan
    scores[3, :] = -np.inf
    scores[3, [5, 77, 4000]] = [1.0, 3.0, 2.0]  # three eligible items only
    scores[4, m - 7 :] = 100.0  # the best items sit in the ragged last block
    allowed = rng.random(m) > 0.1
    allowed[[5, 77, 4000]] = True
    banned = sp.random(6, m, density=0.01, format="lil", random_state=4)
    banned[3, :] = 0
    banned = banned.tocsr()
    banned.eliminate_zeros()
    n = 40
    idx, best = top_n(scores, n, banned, allowed)
    for r in range(6):
        row = scores[r].astype(np.float64)
        ok = allowed & np.isfinite(row)
        ok[banned[r].indices] = False
        want = sorted(np.flatnonzero(ok), key=lambda c: (-row[c], c))[:n]
        got = idx[r][idx[r] >= 0]
        assert got.tolist() == want
        assert np.allclose(best[r][: len(want)], row[want])
        assert np.isnan(best[r][len(want) :]).all()
    assert idx[3].tolist()[:4] == [77, 4000, 5, -1]
    assert set(idx[4, :7]) == set(range(m - 7, m)) - set(banned[4].indices)


def test_generators_save_and_load_the_same_scores(tmp_path: pytest.TempPathFactory) -> None:
    tl = timeline(random_events(20, 10, 4, seed=5), 20, 10)
    cfg = CandidateConfig(als_factors=3, bpr_factors=3, bpr_iterations=5)
    ctx = context(tl, cfg, content=np.eye(10, dtype=np.float32))
    batch = ctx.batch(["u1", "u2", "nobody"], recent_items=[[], [], ["i3"]])
    for cls in GENERATORS.values():
        gen = cls(cfg)
        gen.fit(ctx)
        gen.save(tmp_path)  # type: ignore[arg-type]
        again = cls.load(tmp_path, ctx)  # type: ignore[arg-type]
        np.testing.assert_allclose(
            again.scores(batch), gen.scores(batch), rtol=1e-6, err_msg=cls.name
        )


def test_a_registered_user_without_history_is_folded_in_from_recent_items() -> None:
    cfg = CandidateConfig(als_factors=4, als_iterations=5, content_history=5)
    tl = timeline(random_events(20, 16, 5, seed=6), 21, 16)  # user 20 has no events
    ctx = context(tl, cfg, content=np.eye(16, dtype=np.float32))
    gen = ALSGenerator(cfg)
    gen.fit(ctx)
    alone = ctx.batch(["u20"])
    given = ctx.batch(["u20"], recent_items=[["i1", "i2"]])
    assert not alone.known[0] and not given.known[0]
    assert given.rows.nnz == 2
    assert np.abs(gen.user_vectors(alone)).sum() == 0
    stranger = ctx.batch(["stranger"], recent_items=[["i1", "i2"]])
    np.testing.assert_allclose(gen.user_vectors(given), gen.user_vectors(stranger), rtol=1e-6)
    # a user with history keeps it: recent_items only fold in users without rows
    with_history = ctx.batch(["u0"], recent_items=[["i15"]])
    assert with_history.known[0]
    assert with_history.rows.nnz == ctx.history.matrix[0].nnz
    content = ContentGenerator(cfg)
    content.fit(ctx)
    assert content.answers(given)[0] and not content.answers(alone)[0]


def test_configs_merge_partial_tables_and_reject_unknown_keys(
    tmp_path: pytest.TempPathFactory,
) -> None:
    from pathlib import Path

    from pipelines.errors import ConfigError
    from pipelines.recommender.config import TrainConfig

    cfg = CandidateConfig(per_source={"als": 10, "trending": 0})
    assert cfg.per_source["als"] == 10 and cfg.per_source["trending"] == 0
    assert cfg.per_source["bpr"] == 40, "sources not named keep their default"
    with pytest.raises(ConfigError, match="unknown sources"):
        CandidateConfig(per_source={"svd": 10})
    root = Path(str(tmp_path))
    good = root / "train.toml"
    good.write_text(
        "[train]\nfolds = 3\n[candidates]\nals_factors = 8\n[ranker]\nlabel_days = 7.0\n"
    )
    parsed = TrainConfig.from_toml(good)
    assert (parsed.train.folds, parsed.candidates.als_factors, parsed.ranker.label_days) == (
        3,
        8,
        7.0,
    )
    bad = root / "bad.toml"
    bad.write_text("[candidate]\nals_factors = 8\n")
    with pytest.raises(ConfigError, match=r"unknown table\(s\) \['candidate'\]"):
        TrainConfig.from_toml(bad)
    typo = root / "typo.toml"
    typo.write_text("[ranker]\nlabel_day = 7\n")
    with pytest.raises(ConfigError, match="label_day"):
        TrainConfig.from_toml(typo)


def test_group_shared_lists_equal_per_user_ranking() -> None:
    from pipelines.candidates.base import shared_top

    rng = np.random.default_rng(8)
    events = [
        (u, int(i), "view", float(rng.uniform(80, 99)))
        for u in range(60)
        for i in rng.choice(30, 6, replace=False)
    ]
    age = [float(a) for a in rng.choice([22, 30, 50, np.nan], 60)]
    gender = [g if g != "-" else None for g in rng.choice(["F", "M", "-"], 60)]
    tl = timeline(events, 60, 30, age=age, gender=gender)
    seg = rng.integers(-1, 3, 60)
    cfg = CandidateConfig(popularity_smoothing=3.0)
    ctx = context(tl, cfg, segment=seg)
    batch = ctx.batch(list(ctx.user_ids))
    for cls in (PopularityGenerator, TrendingGenerator):
        gen = cls(cfg)
        gen.fit(ctx)
        group, rows = gen.shared(batch)
        np.testing.assert_allclose(rows[group], gen.scores(batch), rtol=1e-6)
        assert len(rows) < len(batch) or cls is TrendingGenerator
        shared_idx = shared_top(group, rows, 8, batch.rows, ctx.history.item_exists)
        _, full_best = top_n(gen.scores(batch), 8, batch.rows, ctx.history.item_exists)
        shared_scores = np.take_along_axis(gen.scores(batch), np.maximum(shared_idx, 0), axis=1)
        np.testing.assert_allclose(
            np.where(shared_idx >= 0, shared_scores, np.nan), full_best, rtol=1e-6
        )
        seen = batch.rows.toarray() > 0
        assert not seen[np.arange(60)[:, None], np.maximum(shared_idx, 0)][shared_idx >= 0].any()


def test_best_first_orders_like_lexsort() -> None:
    """Packed-key ordering equals lexsort by row, value high to low, then col, for
    negative, zero, signed-zero, tiny, huge and infinite values and tied values."""
    from pipelines.candidates.base import best_first

    rng = np.random.default_rng(8)
    n_rows, n_cols = 700, 50_000
    pairs = np.unique(rng.integers(0, n_rows * n_cols, 20_000))
    rows, cols = pairs // n_cols, pairs % n_cols
    pool = np.array(
        [-np.inf, -3e38, -2.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 0.5, 2.0, 3e38, np.inf],
        dtype=np.float32,
    )
    vals = np.where(
        rng.random(len(rows)) < 0.5,
        rng.choice(pool, len(rows)),
        rng.standard_normal(len(rows)).astype(np.float32),
    ).astype(np.float32)
    got = best_first(rows, cols, vals, n_cols)
    want = np.lexsort((cols, -vals.astype(np.float64), rows))
    assert got.tolist() == want.tolist()
    wide = best_first(np.array([2**40, 0]), np.array([1, 2]), np.array([1.0, 2.0]), 2**30)
    assert wide.tolist() == [1, 0]  # too wide to pack: lexsort
