"""Known shoppers' precomputed lists: the version's own live answer, looked up."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.promotion import layout
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import MODEL_NAME
from serving.known import LIST_K, KnownLists, compute, plain
from tests.served import ServedShop
from tests.serving.test_api import Api


def _bundle(shop: ServedShop) -> Recommender:
    root = Path(shop.settings.serving_bucket_uri.removeprefix("file://"))
    return Recommender.load(root / layout.version_key(MODEL_NAME, shop.rec[0], layout.BUNDLE))


def test_get_trims_short_lists_and_refuses_what_it_does_not_hold() -> None:
    lists = KnownLists(
        positions=np.array([-1, 0, 1], dtype=np.int32),
        rows=np.array([[5, 7] + [-1] * (LIST_K - 2), list(range(LIST_K))], dtype=np.int32),
        scores=np.tile(np.linspace(1, 0, LIST_K), (2, 1)),
        seconds=0.0,
    )
    rows, scores = lists.get(1, 10)  # type: ignore[misc]
    assert rows.tolist() == [5, 7] and scores.tolist() == pytest.approx([1.0, 1 - 1 / 49])
    assert lists.get(2, 3)[0].tolist() == [0, 1, 2]  # type: ignore[index]
    assert lists.get(2, LIST_K)[0].tolist() == list(range(LIST_K))  # type: ignore[index]
    assert lists.get(0, 5) is None  # a shopper not precomputed
    assert lists.get(3, 5) is None and lists.get(-1, 5) is None  # no such code
    assert lists.get(2, LIST_K + 1) is None  # more than a list holds: computed live


def test_only_the_plain_list_is_looked_up() -> None:
    assert plain(RecommendRequest(["u"], k=10, age=[float("nan")], gender=[None]))
    assert plain(RecommendRequest(["u"], k=10, exclude=[[]], recent_items=[[]]))
    for other in (
        RecommendRequest(["u"], explain=True),
        RecommendRequest(["u"], category="Books"),
        RecommendRequest(["u"], exclude=[["i1"]]),
        RecommendRequest(["u"], recent_items=[["i1"]]),
        RecommendRequest(["u"], store_users=[[1.0]]),
    ):
        assert not plain(other), other


@pytest.mark.slow
def test_lists_are_the_live_answers_of_the_most_active_shoppers(served_shop: ServedShop) -> None:
    rec = _bundle(served_shop)
    events = rec.ctx.history.user_events
    known = np.flatnonzero(events > 0)
    limit = len(known) // 2
    lists = compute(rec, limit)
    assert lists is not None and lists.shoppers == limit
    chosen = np.flatnonzero(lists.positions >= 0)
    left_out = np.setdiff1d(known, chosen)
    assert events[chosen].min() >= events[left_out].max()  # the most active first
    assert not (lists.positions[events == 0] >= 0).any()  # never a shopper without history
    live = rec.recommend(RecommendRequest([str(u) for u in rec.ctx.user_ids[chosen]], k=LIST_K))
    for code, group in live.groupby("user_id", sort=False):
        c = int(np.flatnonzero(rec.ctx.user_ids == code)[0])
        for k in (1, 10, LIST_K):
            rows, scores = lists.get(c, k)  # type: ignore[misc]
            assert list(rec.ctx.item_ids[rows]) == list(group["item_id"][:k])
            np.testing.assert_allclose(scores, group["score"][:k], rtol=1e-9)
    assert compute(rec, 0) is None


@pytest.mark.slow
def test_the_api_answers_known_shoppers_from_the_lists_like_live(
    served_shop: ServedShop, tmp_path: Path
) -> None:
    on = Api(served_shop, tmp_path / "on")
    off = Api(served_shop, tmp_path / "off", serving_precomputed_shoppers=0)
    online = Api(
        served_shop,
        tmp_path / "online",
        serving_feature_source="online",
        feature_store_dir=tmp_path / "fs",
    )
    try:
        version = on.app.state.shopml.models.current(MODEL_NAME)
        assert version.known is not None and version.known.shoppers > 0
        assert off.app.state.shopml.models.current(MODEL_NAME).known is None
        served = {m["model"]: m for m in on.get("/v1/models").json()["models"]}
        assert served[MODEL_NAME]["precomputed_shoppers"] == version.known.shoppers
        assert {m["model"]: m for m in off.get("/v1/models").json()["models"]}[MODEL_NAME][
            "precomputed_shoppers"
        ] == 0
        # fresher profiles between swaps would make a list stale: never precomputed
        assert online.app.state.shopml.models.current(MODEL_NAME).known is None
        rec = version.obj
        codes = np.flatnonzero(version.known.positions >= 0)[:25]
        batcher = on.app.state.shopml.recommend
        before = batcher.requests
        for code in codes:
            url = f"/v1/recommendations/{rec.ctx.user_ids[code]}?k=12"
            a, b = on.get(url).json(), off.get(url).json()
            assert a["cold_start"] is False and b["cold_start"] is False
            assert [(i["item_id"], i["score"], i["title"], i["price"]) for i in a["items"]] == [
                (i["item_id"], i["score"], i["title"], i["price"]) for i in b["items"]
            ]
        assert batcher.requests == before  # looked up, not computed
        user = rec.ctx.user_ids[codes[0]]
        answer = on.get(f"/v1/recommendations/{user}?k=5").json()
        first = answer["items"]
        drop = first[0]["item_id"]
        kept = on.get(f"/v1/recommendations/{user}?k=5&exclude={drop}").json()["items"]
        assert drop not in {i["item_id"] for i in kept}
        assert on.get(f"/v1/recommendations/{user}?k={LIST_K + 1}").status_code == 200
        assert on.get(f"/v1/recommendations/{user}?k=3&explain=true").json()["items"][0]["reasons"]
        assert batcher.requests == before + 3  # everything but the plain list: live
        served = [x for x in on.spool() if x["request_id"] == answer["request_id"]]
        assert served and served[0]["items"] == [i["item_id"] for i in first]  # spooled too
    finally:
        for api in (on, off, online):
            api.close()
