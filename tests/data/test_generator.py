"""The generator plants the structure docs/data-generator.md promises, and nothing else breaks it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer

from pipelines.data.contract import TABLES, check_schema
from pipelines.data.describe import describe_snapshot
from pipelines.data.generator import GeneratorConfig, generate_shop, vocab
from pipelines.data.generator.world import affinity, sample_from_leaf
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ShopMLError
from pipelines.io import sha256_file
from tests.conftest import SMALL, Shop

TINY = GeneratorConfig(users=800, items=300, events=15_000, seed=11, days=30, judged_queries=50)


# ----------------------------------------------------------------------------- determinism and contract


def test_same_seed_gives_byte_identical_tables(tmp_path: Path) -> None:
    a = generate_shop(TINY, out=tmp_path / "a")
    b = generate_shop(TINY, out=tmp_path / "b")
    c = generate_shop(replace(TINY, seed=12), out=tmp_path / "c")
    for table in ("users", "items", "events", "queries", "judgments"):
        assert sha256_file(a.path / f"{table}.parquet") == sha256_file(
            b.path / f"{table}.parquet"
        ), table
    assert a.snapshot_id == b.snapshot_id
    assert c.snapshot_id != a.snapshot_id
    assert sha256_file(c.path / "events.parquet") != sha256_file(a.path / "events.parquet")


def test_writes_exactly_the_requested_events_in_contract_form(small_shop: Shop) -> None:
    snap = Snapshot.open(small_shop.path)
    snap.verify()
    assert snap.rows("events") == SMALL.events
    assert snap.rows("users") == SMALL.users and snap.rows("items") == SMALL.items
    for table in ("users", "items", "events", "queries", "judgments"):
        check_schema(table, pq.read_table(small_shop.path / TABLES[table].file), file=table)
    ev = small_shop.events
    assert ev["event_id"].is_unique
    assert set(ev["user_id"]) <= set(small_shop.users["user_id"])
    assert set(ev["item_id"]) <= set(small_shop.items["item_id"])
    assert set(ev["query_id"].dropna()) <= set(small_shop.queries["query_id"])
    start = pd.Timestamp(SMALL.start)
    assert ev["ts"].min() >= start and ev["ts"].max() < start + pd.Timedelta(days=SMALL.days)


@pytest.mark.parametrize(
    "overrides",
    [
        {"search_share": 0.0},
        {"search_share": 1.0},
        {"image_dim": 0, "days": 1},
        {"events": 1},
        {"users": 1, "events": 5_000},
        {"new_user_share": 0.0, "new_item_share": 0.0, "judged_queries": 0},
    ],
    ids=["no-search", "all-search", "one-day", "one-event", "one-user", "no-arrivals"],
)
def test_extreme_parameters_still_give_exact_valid_snapshots(
    tmp_path: Path, overrides: dict[str, float]
) -> None:
    cfg = replace(GeneratorConfig(users=300, items=100, events=3_000, seed=1), **overrides)
    snap = Snapshot.open(generate_shop(cfg, out=tmp_path / "s").path)
    assert snap.rows("events") == cfg.events
    for table in ("users", "items", "events", "queries"):
        check_schema(table, snap.read(table), file=table, whole_table=table != "queries")
    if cfg.search_share == 0:
        assert (
            snap.rows("queries") == 0
            and snap.read("events", ["query_id"]).column(0).null_count == cfg.events
        )


def test_rejects_parameters_it_cannot_honour() -> None:
    with pytest.raises(ShopMLError, match="--items must be at least 93"):
        GeneratorConfig(items=50)
    with pytest.raises(ShopMLError, match="--new-user-share"):
        GeneratorConfig(new_user_share=1.0)
    with pytest.raises(ShopMLError, match="--start must lie between 1975 and 2200"):
        GeneratorConfig(start=datetime(1969, 6, 1, tzinfo=UTC))


# ----------------------------------------------------------------------------- catalog


def test_category_tree_brands_and_log_normal_prices(small_shop: Shop) -> None:
    items = small_shop.items
    assert items["category"].nunique() >= 20
    assert all("/" in c for c in items["category"].unique())
    assert items.groupby("category")["brand"].nunique().min() >= 2
    assert (items["price"] > 0).all()
    median = items.groupby("category")["price"].median()
    assert median["Electronics/Laptops"] > 10 * median["Grocery/Snacks"]
    # Log-normal: log prices of one product type are roughly symmetric around their median.
    world = small_shop.world
    logp = np.log(items["price"].to_numpy())
    for noun in range(len(world.nouns)):
        x = logp[world.item_noun == noun]
        if len(x) >= 15:
            skew = ((x - x.mean()) ** 3).mean() / x.std() ** 3
            assert abs(skew) < 1.2, world.nouns[noun]


def test_text_similarity_carries_category_and_style(small_shop: Shop) -> None:
    items, world = small_shop.items, small_shop.world
    tfidf = TfidfVectorizer().fit_transform(items["title"] + " " + items["description"])
    sim = (tfidf @ tfidf.T).toarray()
    np.fill_diagonal(sim, np.nan)
    same_leaf = world.item_leaf[:, None] == world.item_leaf[None, :]
    same_style = (world.item_style[:, None] == world.item_style[None, :]) & (
        world.item_style_sign[:, None] == world.item_style_sign[None, :]
    )
    assert np.nanmean(sim[same_leaf]) > np.nanmean(sim[~same_leaf]) + 0.1
    assert np.nanmean(sim[same_leaf & same_style]) > np.nanmean(sim[same_leaf & ~same_style]) + 0.03


def test_image_embeddings_follow_category_and_can_be_left_out(
    small_shop: Shop, tmp_path: Path
) -> None:
    emb = np.stack(small_shop.items["image_embedding"].to_numpy())
    assert emb.shape == (SMALL.items, SMALL.image_dim)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = emb @ emb.T
    leaf = small_shop.world.item_leaf
    same = leaf[:, None] == leaf[None, :]
    np.fill_diagonal(same, False)
    other = leaf[:, None] != leaf[None, :]
    assert cos[same].mean() > cos[other].mean() + 0.3

    plain = generate_shop(replace(TINY, image_dim=0), out=tmp_path / "plain")
    assert "image_embedding" not in pq.read_schema(plain.path / "items.parquet").names
    assert Snapshot.open(plain.path).manifest["image_embedding_dim"] is None


# ----------------------------------------------------------------------------- behaviour


def test_popularity_is_heavily_skewed(small_shop: Shop) -> None:
    pop = describe_snapshot(small_shop.path)["popularity"]
    assert pop["gini"] > 0.5
    assert pop["top_10pct_share"] > 0.45
    assert pop["top_1pct_share"] > 0.10


def test_funnel_ratios_and_order(small_shop: Shop) -> None:
    funnel = describe_snapshot(small_shop.path)["funnel"]
    assert 0.05 < funnel["cart_per_view"] < 0.30
    assert 0.30 < funnel["purchase_per_cart"] < 0.85
    ev = small_shop.events
    key = ["session_id", "item_id"]
    first = ev.pivot_table(index=key, columns="event_type", values="ts", aggfunc="min")
    carts = first[first["add_to_cart"].notna()]
    seen = carts[["view", "search_click"]].min(axis=1)
    assert (seen <= carts["add_to_cart"]).all(), "every add_to_cart follows a view or search click"
    buys = first[first["purchase"].notna()]
    assert (buys["add_to_cart"] <= buys["purchase"]).all(), "every purchase follows an add_to_cart"


def test_consumables_are_bought_again_about_one_cycle_later(small_shop: Shop) -> None:
    buys = small_shop.events[small_shop.events["event_type"] == "purchase"].sort_values("ts")
    leaf = small_shop.world.item_leaf[small_shop.item_number(buys["item_id"]).to_numpy()]
    buys = buys.assign(cycle=[vocab.LEAVES[i].cycle_days for i in leaf], leaf=leaf)
    gap_days = buys.groupby(["user_id", "item_id"])["ts"].diff().dt.total_seconds() / 86_400
    repeats = buys.assign(gap=gap_days)[gap_days.notna()]
    # Durable goods are bought once per shopper (the planted rule).
    assert (repeats["cycle"] > 0).all()
    consumable = buys["cycle"] > 0
    assert consumable.sum() > 0 and len(repeats) > 0.15 * consumable.sum()
    # Repeat purchases come about one reorder cycle apart, leaf by leaf (for cycles short
    # enough that the period holds several of them).
    checked = 0
    for _, group in repeats[repeats["cycle"] <= SMALL.days / 3].groupby("leaf"):
        if len(group) >= 30:
            assert 0.6 < group["gap"].median() / group["cycle"].iloc[0] < 1.3
            checked += 1
    assert checked >= 3


def test_new_users_and_items_arrive_throughout(small_shop: Shop) -> None:
    start = pd.Timestamp(SMALL.start)
    users, items, ev = small_shop.users, small_shop.items, small_shop.events
    assert (users["signup_ts"] >= start).mean() == pytest.approx(SMALL.new_user_share, abs=0.04)
    assert (items["created_ts"] >= start).mean() == pytest.approx(SMALL.new_item_share, abs=0.05)
    # Nobody acts before signing up; no item is touched before it exists.
    signup = ev["user_id"].map(users.set_index("user_id")["signup_ts"])
    created = ev["item_id"].map(items.set_index("item_id")["created_ts"])
    assert (ev["ts"] >= signup).all() and (ev["ts"] >= created).all()
    # At a temporal split 14 days before the end there are genuinely cold users and items.
    cut = ev["ts"].max() - pd.Timedelta(days=14)
    before, after = ev[ev["ts"] < cut], ev[ev["ts"] >= cut]
    cold_users = set(after["user_id"]) - set(before["user_id"])
    cold_items = set(after["item_id"]) - set(before["item_id"])
    assert len(cold_users) > 0.05 * after["user_id"].nunique()
    assert len(cold_items) > 0


def test_weekday_and_hour_seasonality(small_shop: Shop) -> None:
    starts = small_shop.events.groupby("session_id")["ts"].min()
    per_weekday = starts.dt.weekday.value_counts().sort_index()
    weekend = per_weekday[[5, 6]].mean()
    weekday = per_weekday[[0, 1, 2, 3]].mean()
    assert weekend > 1.15 * weekday
    hours = starts.dt.hour.value_counts()
    assert hours[[19, 20, 21]].mean() > 4 * hours[[2, 3, 4]].mean()


def test_category_preferences_depend_on_demographics(small_shop: Shop) -> None:
    ev = small_shop.events[small_shop.events["event_type"] == "purchase"]
    ev = ev.merge(small_shop.users, on="user_id").merge(
        small_shop.items[["item_id", "category"]], on="item_id"
    )
    female = (
        ev[ev["gender"].notna()].groupby("category")["gender"].apply(lambda g: (g == "F").mean())
    )
    assert female["Fashion/Women"] > 0.8
    assert female["Fashion/Men"] < 0.2
    age = ev.groupby("category")["age"].mean()
    assert age["Home/Kitchen"] > age["Electronics/Headphones"] + 3


def _drift_between_thirds(path: Path) -> float:
    ev = pd.read_parquet(path / "events.parquet", columns=["user_id", "item_id", "ts"])
    items = pd.read_parquet(path / "items.parquet", columns=["item_id", "category"])
    ev = ev.merge(items, on="item_id")
    t0, t1 = ev["ts"].min(), ev["ts"].max()
    third = (t1 - t0) / 3
    early = (
        ev[ev["ts"] < t0 + third]
        .groupby("user_id")["category"]
        .value_counts(normalize=True)
        .unstack(fill_value=0)
    )
    late = (
        ev[ev["ts"] > t1 - third]
        .groupby("user_id")["category"]
        .value_counts(normalize=True)
        .unstack(fill_value=0)
    )
    users = early.index.intersection(late.index)
    cats = early.columns.union(late.columns)
    e = early.reindex(index=users, columns=cats, fill_value=0).to_numpy()
    late_ = late.reindex(index=users, columns=cats, fill_value=0).to_numpy()
    return float(0.5 * np.abs(e - late_).sum(axis=1).mean())  # mean total-variation distance


def test_interests_drift_over_time(tmp_path: Path) -> None:
    # Few, busy shoppers so that each one's category mix is measured well in each third.
    cfg = GeneratorConfig(users=100, items=300, events=100_000, seed=5, days=60, new_user_share=0.0)
    still = generate_shop(replace(cfg, drift=0.0), out=tmp_path / "still")
    moving = generate_shop(replace(cfg, drift=2.0), out=tmp_path / "moving")
    assert _drift_between_thirds(moving.path) > _drift_between_thirds(still.path) + 0.05


def test_choices_follow_hidden_taste_beyond_popularity(small_shop: Shop) -> None:
    """Popularity alone is a shortcut that fails: bought items match the buyer's hidden taste."""
    world = small_shop.world
    buys = small_shop.events[small_shop.events["event_type"] == "purchase"]
    users = small_shop.user_number(buys["user_id"]).to_numpy()
    items = small_shop.item_number(buys["item_id"]).to_numpy()
    chosen = affinity(world, users, items).mean()
    rng = np.random.default_rng(0)
    # Same leaf, same time, drawn by popularity only.
    times = buys["ts"].astype("int64").to_numpy() // 10**6
    rivals = sample_from_leaf(world, world.item_leaf[items], times, rng, 4)
    baseline = affinity(world, users, rivals).mean()
    assert chosen > baseline + 0.3


# ----------------------------------------------------------------------------- search


def test_queries_have_typos_synonyms_and_position_biased_clicks(small_shop: Shop) -> None:
    q, items = small_shop.queries, small_shop.items
    vocabulary = set(
        " ".join(items["title"] + " " + items["description"])
        .lower()
        .replace(",", " ")
        .replace(".", " ")
        .split()
    )
    synonym_words = {w for syns in vocab.SYNONYMS.values() for s in syns for w in s.split()}
    words = [w for text in q["text"] for w in text.split()]
    unknown = [w for w in words if w not in vocabulary and w not in synonym_words]
    assert len(unknown) / len(words) > 0.01, "some query words are misspelled"
    assert sum(w in synonym_words and w not in vocabulary for w in words) > 0, (
        "some queries use synonyms"
    )

    shown = q["shown_item_ids"].map(list)
    clicked = q["clicked_item_ids"].map(list)
    assert shown.map(len).max() == 10
    assert all(set(c) <= set(s) for c, s in zip(clicked, shown, strict=True))
    positions = np.zeros(10)
    for c, s in zip(clicked, shown, strict=True):
        for item in c:
            positions[s.index(item)] += 1
    exposures = np.bincount(np.concatenate([np.arange(len(s)) for s in shown]), minlength=10)
    ctr = positions / exposures
    assert ctr[0] > ctr[2] > ctr[7]

    # The clicked lists are exactly the search_click events of each query.
    sc = small_shop.events[small_shop.events["event_type"] == "search_click"]
    from_events = sc.sort_values("ts").groupby("query_id")["item_id"].apply(list)
    listed = q.set_index("query_id")["clicked_item_ids"].map(list)
    listed = listed[listed.map(len) > 0]
    assert from_events.sort_index().to_dict() == listed.sort_index().to_dict()


def test_judgments_grade_shown_results(small_shop: Shop) -> None:
    j, q = small_shop.judgments, small_shop.queries
    assert set(j["relevance"].unique()) <= {0.0, 1.0, 2.0, 3.0}
    assert {0.0, 3.0} <= set(j["relevance"].unique())
    assert not j.duplicated(["query", "item_id"]).any()
    assert set(j["query"]) <= set(q["text"])
    # Clicks favour high grades.
    merged = q.explode("clicked_item_ids").merge(
        j, left_on=["text", "clicked_item_ids"], right_on=["query", "item_id"]
    )
    assert merged["relevance"].mean() > j["relevance"].mean() + 0.5
