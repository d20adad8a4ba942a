"""Point in time: a logged query's features use only what happened before its day;
the log's labels and their position-bias reading."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import DAY, load_timeline
from pipelines.features.config import FeatureConfig
from pipelines.search.config import SearchConfig
from pipelines.search.engine import SearchIndex
from pipelines.search.labels import Logged, logged
from pipelines.search.pit import AsOf
from pipelines.search.pit import rows as pit_rows
from pipelines.search.ranker import FEATURES
from tests.conftest import Shop


@pytest.fixture(scope="module")
def setup(small_shop: Shop) -> tuple[Snapshot, SearchIndex, pd.DataFrame, Logged]:
    snap = Snapshot.open(small_shop.path)
    index = SearchIndex.build(snap.read("items").to_pandas(), SearchConfig())
    return snap, index, snap.read("queries").to_pandas(), logged(snap, index)


def _day(data: Logged, day: float) -> Logged:
    m = np.floor(data.ts / DAY) * DAY == day
    pick = np.flatnonzero(m)
    return Logged(
        [data.texts[i] for i in pick], [data.users[i] for i in pick], data.ts[m],
        [data.labels[i] for i in pick], [data.unexamined[i] for i in pick],
    )  # fmt: skip


def test_features_of_a_query_ignore_everything_from_its_day_on(setup) -> None:  # type: ignore[no-untyped-def]
    snap, index, queries, data = setup
    tl = load_timeline(snap)
    days = np.unique(np.floor(data.ts / DAY) * DAY)
    day = float(days[len(days) // 2])
    one = _day(data, day)
    assert len(one) >= 5
    full = pit_rows(AsOf(index, tl, queries, FeatureConfig()), one)
    # the same shop with every event and query from that day on removed
    n = tl.before(day)
    cut = replace(
        tl, user=tl.user[:n], item=tl.item[:n], etype=tl.etype[:n], ts=tl.ts[:n],
        order=tl.order[:n], session=None if tl.session is None else tl.session[:n],
    )  # fmt: skip
    early = queries[queries["ts"] < pd.Timestamp(day, unit="s", tz="UTC")]
    past_only = pit_rows(AsOf(index, cut, early, FeatureConfig()), one)
    np.testing.assert_array_equal(full.groups, past_only.groups)
    np.testing.assert_array_equal(full.y, past_only.y)
    np.testing.assert_allclose(full.x, past_only.x, rtol=1e-5, atol=1e-6, equal_nan=True)
    # and the features do depend on the past: a later day sees more history
    later = pit_rows(AsOf(index, tl, queries, FeatureConfig()), _day(data, float(days[-1])))
    j = FEATURES.index("user_events")
    assert np.nanmax(later.x[:, j]) > 0 and np.isfinite(full.x[:, j]).any()


def test_log_labels_grade_clicks_carts_and_purchases(setup) -> None:  # type: ignore[no-untyped-def]
    snap, index, queries, data = setup
    ev = snap.read("events", columns=["query_id", "item_id", "event_type"]).to_pandas()
    bought = ev[(ev["event_type"] == "purchase") & ev["query_id"].notna()].iloc[0]
    q = queries[queries["query_id"] == bought["query_id"]].iloc[0]
    i = next(k for k, (t, text) in enumerate(zip(data.ts, data.texts, strict=True))
             if text == q["text"] and abs(t - q["ts"].timestamp()) < 1e-3)  # fmt: skip
    row = {v: r for r, v in enumerate(index.item_ids)}
    assert data.labels[i][row[bought["item_id"]]] == 3
    assert set(data.labels[i]) == {row[c] for c in q["clicked_item_ids"]}
    assert all(g >= 1 for lab in data.labels for g in lab.values())
    # shown below the last click: unlabelled; above it and not clicked: not in either set
    shown = list(q["shown_item_ids"])
    last = max(shown.index(c) for c in q["clicked_item_ids"])
    assert data.unexamined[i] == {row[s] for s in shown[last + 1 :]}
    # queries without a click are not training rows
    n_clicked = int(queries["clicked_item_ids"].map(len).gt(0).sum())
    assert len(data) == n_clicked


def test_unexamined_results_are_left_out_of_the_training_rows(setup) -> None:  # type: ignore[no-untyped-def]
    snap, index, queries, data = setup
    i = next(k for k, u in enumerate(data.unexamined) if len(u) >= 3)
    one = Logged(
        [data.texts[i]], [data.users[i]], data.ts[i : i + 1], [data.labels[i]], [data.unexamined[i]]
    )
    keep_all = Logged(one.texts, one.users, one.ts, one.labels, [set()])
    asof = AsOf(index, load_timeline(snap), queries, FeatureConfig())
    dropped, kept = pit_rows(asof, one), pit_rows(asof, keep_all)
    c = index.candidates(data.texts[i])
    n_in = int(np.isin(c.items, list(data.unexamined[i])).sum())
    assert kept.groups[0] - dropped.groups[0] == n_in > 0
    assert dropped.y.sum() == kept.y.sum()  # clicked items are never dropped
