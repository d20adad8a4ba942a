"""Feature store: values as defined, point-in-time correctness, Feast equivalence, serving."""

from __future__ import annotations

import math
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pandas.testing import assert_frame_equal

from feature_store import definitions
from pipelines.data.conform import conform
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.snapshot import Snapshot, write_snapshot
from pipelines.errors import ShopMLError
from pipelines.features import FeatureConfig, build_features
from pipelines.features.config import WINDOWS_DAYS
from pipelines.features.store import get_online, get_training_frame, materialize, open_store
from pipelines.settings import Settings, load_settings
from pipelines.validation.validate import validate_snapshot

SHOP = GeneratorConfig(users=500, items=150, events=15_000, seed=9, days=30, judged_queries=20)
CFG = FeatureConfig(history_days=14, every_days=1.0, segment_k_min=2, segment_k_max=4)
DAY = timedelta(days=1)


def settings_for(home: Path) -> Settings:
    return load_settings({"SHOPML_HOME": str(home)})


class Built:
    def __init__(self, root: Path, snapshot: Path) -> None:
        self.snapshot = snapshot
        self.settings = settings_for(root / "home")
        validate_snapshot(snapshot_uri=snapshot)
        self.build = build_features(
            snapshot_uri=snapshot, out_dir=self.settings.feature_store_dir, cfg=CFG
        )
        self.data = self.settings.feature_store_dir / "data"
        self.events = pd.read_parquet(snapshot / "events.parquet")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    root = tmp_path_factory.mktemp("features")
    generate_shop(SHOP, out=root / "shop")
    return Built(root, root / "shop")


# ----------------------------------------------------------------------------- definitions


def test_view_columns_match_the_feast_schema(built: Built) -> None:
    assert definitions.WINDOWS_DAYS == WINDOWS_DAYS
    for view in definitions.FEATURE_VIEWS:
        columns = pd.read_parquet(built.data / f"{view.name}.parquet").columns
        assert set(columns) == {f.name for f in view.features} | {
            f"{view.entities[0]}_id",
            "event_timestamp",
        }, view.name


def test_grid_and_rows(built: Built) -> None:
    b = built.build
    assert len(b.times) == 15 and b.times[-1] - b.times[0] == timedelta(days=14)
    assert b.as_of == datetime(2026, 1, 31, tzinfo=UTC)  # the midnight after the last event
    profile = pd.read_parquet(built.data / "user_profile.parquet")
    assert not profile.duplicated(["user_id", "event_timestamp"]).any()
    assert b.rows["item_content"] == SHOP.items


# ----------------------------------------------------------------------------- point in time


def _labels(built: Built, t: datetime) -> pd.DataFrame:
    users = built.events["user_id"].drop_duplicates().sort_values().to_numpy()[:200]
    items = built.events["item_id"].drop_duplicates().sort_values().to_numpy()
    return pd.DataFrame(
        {
            "user_id": users,
            "item_id": np.resize(items, len(users)),
            "event_timestamp": t,
            "label": 1.0,
        }
    )


def test_features_at_t_ignore_everything_after_t(built: Built, tmp_path: Path) -> None:
    t = built.build.as_of - 5 * DAY + timedelta(hours=12)
    labels = _labels(built, t)
    before = get_training_frame(labels, settings=built.settings)

    # A later snapshot: the same data plus, after t, purchases by the labelled shoppers,
    # new shoppers (aged 99) and new items (priced 99,999) in existing categories.
    snap = Snapshot.open(built.snapshot)
    old_items = snap.read("items").to_pandas()
    new_items = old_items.head(20).assign(
        item_id=[f"new{i}" for i in range(20)], price=99_999.0, created_ts=pd.Timestamp(t) + pd.Timedelta(hours=2),
        title="zebra quantum gizmo", description="an utterly new thing",
    )  # fmt: skip
    new_users = pd.DataFrame(
        {
            "user_id": [f"nu{i}" for i in range(200)],
            "signup_ts": pd.Timestamp(t) + pd.Timedelta(hours=1),
            "age": 99,
        }
    )
    extra = pd.DataFrame({
        "event_id": [f"late{i}" for i in range(len(labels) + 200)],
        "user_id": [*labels["user_id"], *new_users["user_id"]],
        "item_id": [*labels["item_id"], *(f"new{i % 20}" for i in range(200))],
        "event_type": "purchase",
        "ts": [t + timedelta(hours=3 + i % 48) for i in range(len(labels) + 200)], "session_id": "late",
    })  # fmt: skip
    later = tmp_path / "later"
    with write_snapshot(later, source="test", producer={}) as w:
        w.write_table(
            "users", pa.concat_tables([snap.read("users"), conform("users", new_users, file="u")])
        )
        w.write_table(
            "items",
            pa.concat_tables([snap.read("items"), conform("items", new_items, file="i", parse={})]),
        )
        w.write_table(
            "events", pa.concat_tables([snap.read("events"), conform("events", extra, file="e")])
        )
        for name in ("queries", "judgments"):
            w.write_table(name, snap.read(name))
    again = Built(tmp_path, later)
    assert again.build.as_of == built.build.as_of
    after = get_training_frame(labels, settings=again.settings)
    assert_frame_equal(before, after)
    # The new events do show at the final grid time, so the check above is not vacuous.
    final = get_training_frame(
        labels.assign(event_timestamp=built.build.as_of), settings=again.settings
    )
    baseline = get_training_frame(
        labels.assign(event_timestamp=built.build.as_of), settings=built.settings
    )
    assert (final["user_profile__purchase_7d"] > baseline["user_profile__purchase_7d"]).sum() > 100


def test_two_label_times_for_one_user_get_the_values_of_their_own_past(built: Built) -> None:
    ev = built.events
    times = np.array([pd.Timestamp(t) for t in built.build.times])
    busy = ev[ev["ts"] >= pd.Timestamp(times[3])]["user_id"].value_counts().index[0]
    t1 = pd.Timestamp(times[2]) + pd.Timedelta(hours=7)
    t2 = pd.Timestamp(times[-1]) + pd.Timedelta(hours=1)
    labels = pd.DataFrame({"user_id": [busy, busy], "event_timestamp": [t1, t2]})
    frame = get_training_frame(
        labels,
        ["user_profile:events_total", "user_profile:view_7d", "user_profile:recency_days"],
        settings=built.settings,
    )
    mine = ev[ev["user_id"] == busy]
    for row, t in zip(frame.itertuples(), (t1, t2), strict=True):
        grid = times[times <= t].max()  # the latest feature row at or before the label
        past = mine[mine["ts"] < grid]
        assert row.user_profile__events_total == len(past)
        assert (
            row.user_profile__view_7d
            == ((past["event_type"] == "view") & (past["ts"] >= grid - pd.Timedelta(days=7))).sum()
        )
        assert row.user_profile__recency_days == pytest.approx(
            (grid - past["ts"].max()).total_seconds() / 86400, rel=1e-5
        )
    assert frame["user_profile__events_total"].iloc[1] > frame["user_profile__events_total"].iloc[0]


def test_labels_before_the_first_feature_row_get_nulls_and_keep_their_place(built: Built) -> None:
    early = built.build.times[0] - DAY
    labels = pd.DataFrame(
        {
            "user_id": ["u001", "u002", "u001"],
            "event_timestamp": [built.build.as_of, early, early],
            "row": [0, 1, 2],
        }
    )
    frame = get_training_frame(labels, ["user_profile:events_total"], settings=built.settings)
    assert frame["row"].tolist() == [0, 1, 2]
    assert frame["user_profile__events_total"].isna().tolist() == [False, True, True]


def test_same_rows_as_feast_historical_retrieval(built: Built) -> None:
    store = open_store(built.settings, project=f"t{uuid.uuid4().hex[:8]}", apply=True)
    rng = np.random.default_rng(0)
    times = pd.to_datetime([t.isoformat() for t in built.build.times])
    users = built.events["user_id"].unique()
    items = built.events["item_id"].unique()
    labels = pd.DataFrame({
        "user_id": rng.choice(users, 300), "item_id": rng.choice(items, 300),
        "event_timestamp": times[0] + pd.to_timedelta(rng.integers(0, 14 * 86400, 300), unit="s"),
    }).drop_duplicates(["user_id", "item_id", "event_timestamp"])  # fmt: skip
    labels = labels[
        labels["user_id"].isin(pd.read_parquet(built.data / "user_profile.parquet")["user_id"])
    ]
    refs = [
        "user_profile:events_total",
        "user_profile:view_7d",
        "user_profile:price_sensitivity",
        "item_stats:cart_rate",
        "item_stats:purchase_30d",
    ]
    ours = get_training_frame(labels, refs, settings=built.settings)
    feast = store.get_historical_features(
        entity_df=labels, features=refs, full_feature_names=True
    ).to_df()
    key = ["user_id", "item_id", "event_timestamp"]
    # Feast's file store drops a label that precedes an entity's first feature row (a
    # shopper who signed up later, an item created later); ours keeps it with nulls.
    # Those are exactly the rows where ours has no user or no item features.
    missing = ours["user_profile__events_total"].isna() | ours["item_stats__cart_rate"].isna()
    assert len(feast) == len(labels) - int(missing.sum()) and missing.sum() > 0
    ours = ours[~missing].sort_values(key).reset_index(drop=True)
    feast = feast.sort_values(key).reset_index(drop=True)
    assert_frame_equal(ours[key], feast[key], check_dtype=False)
    for ref in refs:
        column = ref.replace(":", "__")
        np.testing.assert_allclose(
            ours[column].to_numpy(dtype=float), feast[column].to_numpy(dtype=float), equal_nan=True
        )


# ----------------------------------------------------------------------------- definitions of values


def _tiny(tmp_path: Path) -> Built:
    day = datetime(2026, 1, 1, tzinfo=UTC)
    users = pd.DataFrame(
        {
            "user_id": ["a", "b", "c"],
            "signup_ts": [day - 10 * DAY] * 3,
            "age": ["30", "40", None],
            "gender": ["F", "M", None],
        }
    )
    items = pd.DataFrame({
        "item_id": ["x", "y", "z", "w"], "title": ["red mug", "blue pan", "green pan", "big mug"],
        "category": ["A/B", "A/C", "A/C", "A/B"], "brand": ["K", "L", "L", "K"], "price": ["10", "30", "20", "30"],
        "currency": ["EUR"] * 4, "created_ts": [day - 5 * DAY] * 4,
    })  # fmt: skip
    events = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(5)],
        "user_id": ["a", "a", "a", "a", "b"],
        "item_id": ["x", "x", "x", "y", "z"],
        "event_type": ["view", "add_to_cart", "purchase", "view", "view"],
        "ts": [day + DAY, day + DAY + timedelta(minutes=1), day + DAY + timedelta(minutes=2), day + 3 * DAY, day + 2 * DAY],
        "session_id": ["s1", "s1", "s1", "s2", "s3"],
    })  # fmt: skip
    with write_snapshot(tmp_path / "tiny", source="test", producer={}) as w:
        w.write_table("users", conform("users", users, file="u"))
        w.write_table("items", conform("items", items, file="i"))
        w.write_table("events", conform("events", events, file="e"))
    return Built(tmp_path, tmp_path / "tiny")


def test_profile_and_stats_match_their_definitions(tmp_path: Path) -> None:
    tiny = _tiny(tmp_path)
    as_of = pd.Timestamp("2026-01-05", tz="UTC")  # midnight after the last event (Jan 4)
    profile = pd.read_parquet(tiny.data / "user_profile.parquet")
    a = profile[(profile["user_id"] == "a") & (profile["event_timestamp"] == as_of)].iloc[0]
    assert (
        a["events_total"] == 4 and a["view_7d"] == 2 and a["purchase_7d"] == 1 and a["view_1d"] == 1
    )
    h = 14.0
    x_weight = (1 + 3 + 5) * 2 ** (-(4 - 1) / h)  # view, cart, purchase of x ~3 days before as_of
    y_weight = 1 * 2 ** (-(4 - 3) / h)
    assert list(a["top_categories"]) == ["A/B", "A/C"]
    assert a["top_category_weights"][0] == pytest.approx(x_weight / (x_weight + y_weight), rel=1e-3)
    assert list(a["top_brands"]) == ["K", "L"]
    assert a["median_purchase_price"] == 10.0
    # A/B holds x (10) and w (30): median 20; a paid 10, so ln(20 / 10).
    assert a["price_sensitivity"] == pytest.approx(math.log(2.0), rel=1e-5)
    assert a["recency_days"] == pytest.approx(1.0)
    # Three shoppers are too few to cluster: no segments, and the build says why.
    assert (profile["segment"] == -1).all()
    assert (
        tiny.build.segments["k"] == 0 and "1 shopper(s) with history" in tiny.build.segments["note"]
    )
    c = profile[(profile["user_id"] == "c") & (profile["event_timestamp"] == as_of)].iloc[0]
    assert (
        c["events_total"] == 0
        and math.isnan(c["recency_days"])
        and c["segment"] == -1
        and len(c["top_categories"]) == 0
    )

    stats = pd.read_parquet(tiny.data / "item_stats.parquet")
    x = stats[(stats["item_id"] == "x") & (stats["event_timestamp"] == as_of)].iloc[0]
    prior = 1 / 3  # one cart over three views in the 30-day window (w has no events)
    assert x["cart_rate"] == pytest.approx((1 + 20 * prior) / (1 + 20), rel=1e-6)
    assert x["purchase_rate"] == pytest.approx((1 + 20 * 1.0) / (1 + 20), rel=1e-6)
    assert x["item_age_days"] == pytest.approx(9.0)
    # One grid time earlier (Jan 4 00:00) the view of y at exactly Jan 4 00:00 is not counted yet:
    # a feature row at t sees only events strictly before t.
    earlier = profile[
        (profile["user_id"] == "a") & (profile["event_timestamp"] == as_of - pd.Timedelta(days=1))
    ].iloc[0]
    assert earlier["events_total"] == 3


def test_content_embeddings(built: Built) -> None:
    content = pd.read_parquet(built.data / "item_content.parquet")
    text = np.stack(content["text_embedding"].to_numpy())
    assert text.shape == (SHOP.items, CFG.text_dim)
    assert np.allclose(np.linalg.norm(text, axis=1), 1.0, atol=1e-5)
    items = (
        pd.read_parquet(built.snapshot / "items.parquet")
        .set_index("item_id")
        .loc[content["item_id"]]
    )
    cats = items["category"].to_numpy()
    sim = text @ text.T
    same = cats[:, None] == cats[None, :]
    np.fill_diagonal(same, False)
    assert sim[same].mean() > sim[cats[:, None] != cats[None, :]].mean() + 0.2
    np.testing.assert_allclose(
        np.stack(content["image_embedding"].to_numpy()),
        np.stack(items["image_embedding"].to_numpy()),
    )
    assert content["has_image"].all()
    # Rows are stamped at creation, or at the first grid time when the text model was fitted.
    created = pd.read_parquet(built.snapshot / "items.parquet").set_index("item_id")["created_ts"]
    fitted = pd.Timestamp(built.build.times[0])
    assert (content.set_index("item_id")["event_timestamp"] == created.clip(lower=fitted)).all()


def test_segments_chosen_by_silhouette_and_saved(built: Built) -> None:
    seg = built.build.segments
    assert CFG.segment_k_min <= seg["k"] <= CFG.segment_k_max
    assert seg["k"] == max(seg["silhouette"], key=lambda k: seg["silhouette"][k])
    assert (built.data / "models" / "segments.joblib").is_file()
    profile = pd.read_parquet(built.data / "user_profile.parquet")
    assert ((profile["segment"] == -1) == (profile["events_total"] == 0)).all()
    assert profile.loc[profile["segment"] >= 0, "segment"].nunique() == seg["k"]


# ----------------------------------------------------------------------------- refusal and serving


def test_build_refuses_a_snapshot_without_events(tmp_path: Path) -> None:
    from pipelines.data.importers.judgments import import_judgments

    src = tmp_path / "rel.csv"
    src.write_text("query,product_title,median_relevance\nmug,Red Mug,4\nmug,Blue Mug,2\n")
    import_judgments(src, out=tmp_path / "j")
    assert validate_snapshot(snapshot_uri=tmp_path / "j").accepted
    with pytest.raises(ShopMLError, match="has no events \\(judgments snapshot\\)"):
        build_features(snapshot_uri=tmp_path / "j", out_dir=tmp_path / "fs", cfg=CFG)


def test_build_refuses_quarantined_or_unvalidated_snapshots(built: Built, tmp_path: Path) -> None:
    snap = Snapshot.open(built.snapshot)
    with write_snapshot(tmp_path / "raw", source="test", producer={}) as w:
        for name in ("users", "items", "events"):
            w.write_table(name, snap.read(name))
    with pytest.raises(ShopMLError, match="has not been validated"):
        build_features(snapshot_uri=tmp_path / "raw", out_dir=tmp_path / "fs", cfg=CFG)
    validate_snapshot(
        snapshot_uri=tmp_path / "raw", now=datetime(2020, 1, 1, tzinfo=UTC)
    )  # everything is "in the future"
    with pytest.raises(ShopMLError, match="is quarantined"):
        build_features(snapshot_uri=tmp_path / "raw", out_dir=tmp_path / "fs", cfg=CFG)
    assert not (tmp_path / "fs" / "data").exists()


def test_materialize_and_read_online(built: Built) -> None:
    materialize(built.settings)
    latest = pd.read_parquet(built.data / "user_profile.parquet")
    latest = latest[latest["event_timestamp"] == latest["event_timestamp"].max()].set_index(
        "user_id"
    )
    user = latest.index[0]
    online = get_online("user", user, built.settings)["user_profile"]
    assert online["events_total"] == latest.loc[user, "events_total"]
    assert online["view_30d"] == latest.loc[user, "view_30d"]
    assert online["top_categories"] == list(latest.loc[user, "top_categories"])
    item = get_online("item", "i001", built.settings)
    assert len(item["item_content"]["text_embedding"]) == CFG.text_dim
    assert all(
        v is None for v in get_online("user", "nobody", built.settings)["user_profile"].values()
    )


@pytest.mark.needs_redis
def test_redis_online_store(built: Built, redis_available: None) -> None:
    settings = replace(built.settings, online_store="redis", redis_url="redis://127.0.0.1:6379/0")
    project = f"shopml_test_{uuid.uuid4().hex[:8]}"  # not a suffix of any other project name
    store = open_store(settings, project=project, apply=True)
    try:
        materialize(settings, project=project)
        online = get_online("user", "u001", settings, project=project)["user_profile"]
        profile = pd.read_parquet(built.data / "user_profile.parquet")
        latest = profile[(profile["user_id"] == "u001")].sort_values("event_timestamp").iloc[-1]
        assert online["events_total"] == latest["events_total"]
        assert (
            len(
                get_online("item", "i001", settings, project=project)["item_content"][
                    "text_embedding"
                ]
            )
            == CFG.text_dim
        )
    finally:
        store.teardown()


@pytest.mark.needs_redis
def test_the_registry_on_s3_is_shared_without_a_disk(
    built: Built, redis_available: None, s3: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Production: a worker materialises with Feast's registry as an S3 object; a reader
    with a feature folder of its own (another host: the serving API) reads the values."""
    import boto3

    monkeypatch.setenv("FEAST_S3_ENDPOINT_URL", "")  # restored after: store_config sets it
    registry = "s3://serving/shopml/feast/registry.db"
    writer = replace(
        built.settings,
        feature_store_dir=tmp_path / "worker",
        feature_registry_uri=registry,
        s3_endpoint_url=s3,
        online_store="redis",
        redis_url="redis://127.0.0.1:6379/0",
    )
    project = f"shopml_test_{uuid.uuid4().hex[:8]}"
    materialize(writer, project=project, source=built.settings.feature_store_dir)
    store = open_store(writer, project=project)
    try:
        key = boto3.client("s3", endpoint_url=s3).head_object(
            Bucket="serving", Key="shopml/feast/registry.db"
        )
        assert key["ContentLength"] > 0
        assert not list((tmp_path / "worker").rglob("registry.db"))  # nothing on its disk
        reader = replace(writer, feature_store_dir=tmp_path / "serving")
        got = (
            open_store(reader, project=project)
            .get_online_features(
                features=["user_profile:events_total"], entity_rows=[{"user_id": "u001"}]
            )
            .to_dict()
        )
        profile = pd.read_parquet(built.data / "user_profile.parquet")
        latest = profile[(profile["user_id"] == "u001")].sort_values("event_timestamp").iloc[-1]
        assert got["events_total"] == [latest["events_total"]]
    finally:
        store.teardown()


@pytest.mark.real_data
def test_movielens_validates_and_builds(tmp_path: Path) -> None:
    from pipelines.data.importers.movielens import import_movielens_100k
    from tests.conftest import shared_data

    import_movielens_100k(shared_data("movielens-100k"), out=tmp_path / "ml")
    report = validate_snapshot(snapshot_uri=tmp_path / "ml")
    assert report.accepted, [c.summary for c in report.failed]
    build = build_features(
        snapshot_uri=tmp_path / "ml", out_dir=tmp_path / "fs", cfg=FeatureConfig()
    )
    assert build.rows["item_content"] == 1_682
    assert build.as_of == datetime(1998, 4, 23, tzinfo=UTC)
    assert build.segments["k"] >= 3
