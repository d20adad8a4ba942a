"""The serving API in-process (TestClient) over a real promoted bucket: every endpoint,
every error body, keys and scopes, hot swap and refusals, and the events spool."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from pipelines.data.snapshot import Snapshot
from pipelines.io import sha256_json
from pipelines.promotion import layout
from pipelines.promotion.promote import rollback
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.rows import STORE_USER_FEATURES
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL
from pipelines.settings import Settings
from serving.app import create_app
from serving.keys import add_key, digest
from serving.request_ids import issued
from tests.served import ServedShop

pytestmark = pytest.mark.slow


class Api:
    """A TestClient over a copy of the served shop's bucket, with a client and an admin key."""

    def __init__(self, shop: ServedShop, root: Path, **settings: Any) -> None:
        self.shop = shop
        self.settings: Settings = replace(shop.copy(root), **settings)
        self.client_key = add_key(self.settings.serving_keys_file, "shop-front", "client")
        self.admin_key = add_key(self.settings.serving_keys_file, "ops", "admin")
        self.app = create_app(self.settings, poll=False, blocking_start=True)
        self.http = TestClient(self.app)
        self.http.__enter__()

    def get(self, url: str, key: str | None = "client", **kw: Any) -> Any:
        return self.http.get(url, headers={**self._headers(key), **kw.pop("headers", {})}, **kw)

    def post(self, url: str, key: str | None = "client", **kw: Any) -> Any:
        return self.http.post(url, headers={**self._headers(key), **kw.pop("headers", {})}, **kw)

    def _headers(self, key: str | None) -> dict[str, str]:
        if key is None:
            return {}
        return {"X-API-Key": {"client": self.client_key, "admin": self.admin_key}.get(key, key)}

    def spool(self) -> list[dict[str, Any]]:
        return [
            json.loads(line)
            for f in sorted(self.settings.serving_events_dir.glob("events-*.jsonl"))
            for line in f.read_text().splitlines()
        ]

    def close(self) -> None:
        self.http.__exit__(None, None, None)


@pytest.fixture
def api(served_shop: ServedShop, tmp_path: Path) -> Iterator[Api]:
    a = Api(served_shop, tmp_path)
    yield a
    a.close()


def _known_user(shop: ServedShop) -> str:
    events = Snapshot.open(shop.trained.snapshot).read("events", ["user_id"]).to_pandas()
    return str(events["user_id"].value_counts().index[0])


def _recommender(api: Api) -> Recommender:
    v = api.app.state.shopml.models.current(MODEL_NAME)
    assert isinstance(v.obj, Recommender)
    return v.obj


# ----------------------------------------------------------------------------- answers


def test_recommendations_for_a_known_and_an_unknown_shopper(api: Api) -> None:
    user = _known_user(api.shop)
    r = api.get(f"/v1/recommendations/{user}?k=7&explain=true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == MODEL_NAME and body["version"] == api.shop.rec[0]
    assert body["cold_start"] is False and body["user_id"] == user
    assert issued(body["request_id"], api.app.state.shopml.secret)
    assert r.headers["x-request-id"] == body["request_id"]
    items = body["items"]
    assert [i["rank"] for i in items] == list(range(1, 8))
    assert len({i["item_id"] for i in items}) == 7
    assert all(i["reasons"] for i in items)
    scores = [i["score"] for i in items]
    assert scores == sorted(scores, reverse=True)
    rec = _recommender(api)
    row = {str(i): n for n, i in enumerate(rec.ctx.item_ids)}
    for i in items:  # titles, categories and prices are the catalog's
        n = row[i["item_id"]]
        assert i["title"] == rec.items.title(n)
        assert i["category"] == rec.items.categories[rec.items.category[n]]
        assert i["price"] == pytest.approx(float(rec.items.price[n]), abs=0.01)
    # the answer was spooled: who was shown what, in which order
    served = [x for x in api.spool() if x["request_id"] == body["request_id"]]
    assert served and served[0]["items"] == [i["item_id"] for i in items]
    cold = api.get("/v1/recommendations/never-seen-before?k=5").json()
    assert cold["cold_start"] is True and len(cold["items"]) == 5


def test_filters_exclusions_and_the_context_of_a_new_shopper(api: Api) -> None:
    user = _known_user(api.shop)
    first = api.get(f"/v1/recommendations/{user}?k=10").json()["items"]
    category = first[0]["category"].split("/")[0]
    inside = api.get(f"/v1/recommendations/{user}?k=10&category={category.lower()}").json()
    assert inside["items"] and all(i["category"].startswith(category) for i in inside["items"])
    drop = [first[0]["item_id"], first[1]["item_id"]]
    kept = api.get(f"/v1/recommendations/{user}?k=10&exclude={','.join(drop)}").json()["items"]
    assert not {i["item_id"] for i in kept} & set(drop)
    # an anonymous shopper with this session's items: the list follows them and never shows
    # them again — except items of the categories shoppers buy again and again (buy-again)
    rec = _recommender(api)
    row = {str(i): n for n, i in enumerate(rec.ctx.item_ids)}
    repeat = rec.ctx.history.repeat_allowed
    once = [i["item_id"] for i in first if not repeat[row[i["item_id"]]]]
    once += [
        str(rec.ctx.item_ids[n]) for n in np.flatnonzero(~repeat & rec.ctx.history.item_exists)
    ]
    recent = list(dict.fromkeys([once[0], first[2]["item_id"], first[3]["item_id"]]))[:2]
    body = {"session_id": "s-1", "recent_items": recent, "age": 30, "gender": "F", "k": 10}
    r = api.post("/v1/recommendations", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["user_id"] is None and answer["cold_start"] is True
    shown = {i["item_id"] for i in answer["items"]}
    assert len(answer["items"]) == 10 and once[0] not in shown
    assert not shown & {i for i in recent if not repeat[row[i]]}
    plain = api.post("/v1/recommendations", json={"k": 10}).json()["items"]
    assert [i["item_id"] for i in plain] != [i["item_id"] for i in answer["items"]]


def test_search_answers_with_fallback_personal_flag_and_filters(api: Api) -> None:
    user = _known_user(api.shop)
    r = api.get(f"/v1/search?q=cat%20litter&k=5&user_id={user}&explain=true")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == SEARCH_MODEL and body["version"] == api.shop.search[0]
    assert body["personal"] is True and body["fallback"] is None and len(body["items"]) == 5
    # the shop's two litters come first, the rest of the pet shelf after them
    assert all("litter" in (i["title"] or "").lower() for i in body["items"][:2])
    assert all(i["category"].startswith("Pets") for i in body["items"])
    assert all(i["reasons"] for i in body["items"])
    anon = api.get("/v1/search?q=cat%20litter&k=5").json()
    assert anon["personal"] is False
    typo = api.get("/v1/search?q=cat%20littter").json()
    assert typo["fallback"] == "corrected" and typo["corrected"] == "cat litter"
    assert typo["fallback_reason"] == "showing results for the corrected query"
    cheap = api.get("/v1/search?q=cat%20litter&price_max=20&k=20").json()["items"]
    assert cheap and all(i["price"] <= 20 for i in cheap)
    ten = api.get("/v1/search?q=cat%20litter&k=10").json()["items"]
    page2 = api.get("/v1/search?q=cat%20litter&k=5&offset=5").json()["items"]
    assert page2 == ten[5:] and page2[0]["rank"] == 6
    nothing = api.get("/v1/search?q=qqqq%20zzzz&k=3").json()
    assert nothing["fallback"] == "popular" and len(nothing["items"]) == 3


def test_similar_items(api: Api) -> None:
    rec = _recommender(api)
    item = str(rec.ctx.item_ids[np.flatnonzero(rec.ctx.history.item_exists)[0]])
    r = api.get(f"/v1/items/{item}/similar?k=6&explain=true")
    assert r.status_code == 200, r.text
    body = r.json()
    ids = [i["item_id"] for i in body["items"]]
    assert body["item_id"] == item and len(ids) == 6 and item not in ids
    assert all(i["reasons"] for i in body["items"])
    missing = api.get("/v1/items/no-such-item/similar")
    assert missing.status_code == 404
    assert missing.json()["error"] == "unknown_item" and missing.json()["item_id"] == "no-such-item"


def test_models_and_readiness(api: Api) -> None:
    assert api.get("/healthz", key=None).json() == {"status": "alive"}
    ready = api.get("/readyz", key=None)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    models = {m["model"]: m for m in api.get("/v1/models").json()["models"]}
    assert models[MODEL_NAME]["version"] == api.shop.rec[0]
    assert models[SEARCH_MODEL]["version"] == api.shop.search[0]
    pointer = json.loads(
        (Path(api.settings.serving_bucket_uri[7:]) / MODEL_NAME / "current.json").read_text()
    )
    assert models[MODEL_NAME]["manifest_sha256"] == pointer["manifest_sha256"]
    assert models[MODEL_NAME]["snapshot_id"] == Snapshot.open(api.shop.trained.snapshot).id


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("/v1/recommendations/u1?k=0", "k"),
        ("/v1/recommendations/u1?k=101", "k"),
        ("/v1/recommendations/u1?k=ten", "k"),
        ("/v1/search?k=3", "q"),
        ("/v1/search?q=" + "a" * 501, "q"),
        ("/v1/search?q=%20%20", "q"),
        ("/v1/search?q=shoes&price_min=50&price_max=10", "price_min"),
        ("/v1/search?q=shoes&offset=-1", "offset"),
        ("/v1/items/x/similar?k=500", "k"),
        ("/v1/recommendations/u1?exclude=" + ",".join(f"i{n}" for n in range(201)), "exclude"),
    ],
)
def test_bad_parameters_are_422_naming_the_parameter(api: Api, url: str, parameter: str) -> None:
    r = api.get(url)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_parameter" and body["parameter"] == parameter
    assert body["message"].startswith(parameter) and "Traceback" not in r.text


def test_bad_bodies_are_refused_whole(api: Api) -> None:
    r = api.post("/v1/recommendations", json={"k": 5, "age": -3})
    assert r.status_code == 422 and r.json()["parameter"] == "age"
    r = api.post("/v1/recommendations", json={"k": 5, "password": "x"})
    assert r.status_code == 422 and r.json()["parameter"] == "password"
    r = api.post("/v1/events", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    big = {"events": [{"type": "purchase", "user_id": "u" * 100, "item_id": "i1"}] * 12000}
    r = api.post("/v1/events", json=big)
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    many = {"events": [{"type": "purchase", "user_id": "u1", "item_id": "i1"}] * 1001}
    r = api.post("/v1/events", json=many)
    assert r.status_code == 422 and r.json()["parameter"] == "events"
    assert api.get("/v1/nothing-here").json()["error"] == "not_found"


def test_keys_and_scopes(api: Api) -> None:
    user = _known_user(api.shop)
    for key, status in ((None, 401), ("smk_wrong", 401), ("client", 200), ("admin", 200)):
        r = api.get(f"/v1/recommendations/{user}", key=key)
        assert r.status_code == status, (key, r.text)
        if status == 401:
            assert r.json()["error"] == "unauthorized"
    r = api.post("/admin/reload", key="client")
    assert r.status_code == 403 and "shop-front" in r.json()["message"]
    assert api.post("/admin/reload", key="admin").status_code == 200
    preview = api.get("/preview?user_id=u1", key=None)
    assert preview.status_code == 401 and preview.headers["www-authenticate"].startswith("Basic")
    assert api.http.get("/preview", auth=("x", api.client_key)).status_code == 403
    # the keys file holds digests, never a key
    stored = api.settings.serving_keys_file.read_text()
    assert api.client_key not in stored and digest(api.client_key) in stored
    assert api.settings.serving_keys_file.stat().st_mode & 0o777 == 0o600


def test_a_key_revoked_in_the_file_is_refused_without_a_restart(api: Api) -> None:
    from serving.keys import revoke_key

    user = _known_user(api.shop)
    assert api.get(f"/v1/recommendations/{user}").status_code == 200
    revoke_key(api.settings.serving_keys_file, "shop-front")
    svc = api.app.state.shopml
    svc._keys_stamp = (0.0, 0.0)  # the once-a-second check is due
    assert api.get(f"/v1/recommendations/{user}").status_code == 401


def test_nothing_promoted_is_503_with_retry_after(served_shop: ServedShop, tmp_path: Path) -> None:
    empty = tmp_path / "empty-bucket"
    empty.mkdir()
    api = Api(served_shop, tmp_path, serving_bucket_uri=empty.as_uri())
    try:
        ready = api.get("/readyz", key=None)
        assert ready.status_code == 503 and ready.json()["ready"] is False
        for url in ("/v1/recommendations/u1", "/v1/search?q=shoes", "/v1/items/i1/similar"):
            r = api.get(url)
            assert r.status_code == 503 and r.headers["retry-after"] == "10"
            assert r.json()["error"] == "not_ready" and "none promoted" in r.json()["message"]
    finally:
        api.close()


# ----------------------------------------------------------------------------- swaps


def _bucket_root(api: Api) -> Path:
    return Path(api.settings.serving_bucket_uri.removeprefix("file://"))


def test_promotion_swaps_a_tampered_version_is_refused_and_rollback_serves_again(
    api: Api,
) -> None:
    shop, svc = api.shop, api.app.state.shopml
    shop.promote(MODEL_NAME, 1, api.settings)
    out = api.post("/admin/reload", key="admin").json()
    assert out["outcome"][MODEL_NAME] == "swapped" and out["outcome"][SEARCH_MODEL] == "unchanged"
    assert api.get("/v1/recommendations/u1").json()["version"] == shop.rec[1]
    # v3 promoted, then one of its files altered before the service reads it
    shop.promote(MODEL_NAME, 2, api.settings)
    ranker = _bucket_root(api) / layout.version_key(MODEL_NAME, shop.rec[2], "bundle/ranker.txt")
    original = ranker.read_bytes()
    ranker.write_bytes(original + b"\n")
    out = api.post("/admin/reload", key="admin").json()
    assert out["outcome"][MODEL_NAME] == "refused"
    refused = out["models"][MODEL_NAME]["refused"]
    assert refused["version"] == shop.rec[2] and "bundle/ranker.txt" in refused["reason"]
    assert "altered" in refused["reason"]
    assert api.get("/v1/recommendations/u1").json()["version"] == shop.rec[1]  # v2 serves on
    ready = api.get("/readyz", key=None).json()
    assert (
        ready["ready"] is True and ready["models"][MODEL_NAME]["refused"]["version"] == shop.rec[2]
    )
    metrics = api.get("/metrics", key=None).text
    assert f'shopml_swaps_refused_total{{model="{MODEL_NAME}"}} 1.0' in metrics
    assert f'shopml_served_version{{model="{MODEL_NAME}"}} {float(shop.rec[1])}' in metrics
    # the refusal is not retried on every poll, only when the pointer moves
    assert api.post("/admin/reload", key="admin").json()["outcome"][MODEL_NAME] == "refused before"
    ranker.write_bytes(original)
    rollback(to_version=shop.rec[0], reason="back to v1", settings=api.settings, requested_by="ops")
    assert api.post("/admin/reload", key="admin").json()["outcome"][MODEL_NAME] == "swapped"
    assert api.get("/v1/recommendations/u1").json()["version"] == shop.rec[0]
    assert svc.models.refused.get(MODEL_NAME) is None


def _rewrite_manifest(root: Path, version: int, change: Any) -> None:
    """Edit a version's manifest and re-point ``current.json`` at it (an attacker who
    can write the bucket but not the ledger)."""
    key = root / layout.version_key(MODEL_NAME, version, layout.MANIFEST)
    manifest = json.loads(key.read_text())
    change(manifest)
    key.write_text(json.dumps(manifest))
    pointer_file = root / layout.pointer_key(MODEL_NAME)
    pointer = json.loads(pointer_file.read_text())
    pointer.update(version=version, manifest_sha256=sha256_json(manifest))
    pointer_file.write_text(json.dumps(pointer))


@pytest.mark.parametrize("attack", ["added file", "path escape", "manifest edited"])
def test_versions_whose_files_do_not_match_their_manifest_are_refused(
    served_shop: ServedShop, tmp_path: Path, attack: str
) -> None:
    api = Api(served_shop, tmp_path)
    try:
        root = _bucket_root(api)
        v = served_shop.rec[0]
        if attack == "added file":
            (root / layout.version_key(MODEL_NAME, v, "bundle/extra.txt")).write_text("x")
            # the pointer must move for the service to look again: re-point at the same files
            _rewrite_manifest(root, v, lambda m: m.update(created_at="later"))
            expect = "not listed in the manifest"
        elif attack == "path escape":
            _rewrite_manifest(root, v, lambda m: m["files"].update({"../../evil.txt": "0" * 64}))
            expect = "leaves the version"
        else:
            pointer_file = root / layout.pointer_key(MODEL_NAME)
            pointer = json.loads(pointer_file.read_text())
            pointer["manifest_sha256"] = "f" * 64
            pointer_file.write_text(json.dumps(pointer))
            expect = "names another manifest"
        out = api.post("/admin/reload", key="admin").json()
        assert out["outcome"][MODEL_NAME] == "refused", out
        assert expect in out["models"][MODEL_NAME]["refused"]["reason"]
        assert api.get("/v1/recommendations/u1").status_code == 200  # still served
        assert not (tmp_path / "evil.txt").exists()
    finally:
        api.close()


# ----------------------------------------------------------------------------- events


def test_events_are_spooled_and_forged_answers_refused(api: Api) -> None:
    user = _known_user(api.shop)
    answer = api.get(f"/v1/search?q=cat%20litter&k=3&user_id={user}").json()
    rid, shown = answer["request_id"], [i["item_id"] for i in answer["items"]]
    events = [
        {"type": "impression", "user_id": user, "item_id": shown[0], "request_id": rid, "position": 1},
        {"type": "click", "user_id": user, "item_id": shown[1], "request_id": rid, "position": 2,
         "ts": "2017-11-01T00:00:00Z"},
        {"type": "purchase", "user_id": user, "item_id": shown[1], "request_id": rid,
         "quantity": 2, "value": 31.5},
    ]  # fmt: skip
    r = api.post("/v1/events", json={"events": events})
    assert r.status_code == 202 and r.json()["accepted"] == 3
    spooled = [x for x in api.spool() if x["kind"] == "event"]
    assert [x["type"] for x in spooled] == ["impression", "click", "purchase"]
    assert spooled[1]["ts"] == "2017-11-01T00:00:00Z" and spooled[1]["key"] == "shop-front"
    before = len(api.spool())
    forged = {**events[1], "request_id": "0123456789abcdef.0123456789abcdef"}
    r = api.post("/v1/events", json={"events": [events[0], forged]})
    assert r.status_code == 422 and r.json()["parameter"] == "events.1.request_id"
    no_answer = {k: v for k, v in events[1].items() if k != "request_id"}
    r = api.post("/v1/events", json={"events": [no_answer]})
    assert r.status_code == 422 and r.json()["parameter"] == "events.0.request_id"
    bad_time = {**events[2], "ts": "yesterday-ish"}
    r = api.post("/v1/events", json={"events": [bad_time]})
    assert r.status_code == 422 and r.json()["parameter"] == "events.0.ts"
    assert len(api.spool()) == before  # a refused batch writes nothing


def test_the_preview_shows_the_served_and_an_earlier_version(api: Api) -> None:
    api.shop.promote(MODEL_NAME, 1, api.settings)
    api.post("/admin/reload", key="admin")
    user = _known_user(api.shop)
    page = api.http.get(f"/preview?user_id={user}", auth=("anyone", api.admin_key))
    assert page.status_code == 200
    html = page.text
    assert f"version {api.shop.rec[1]}" in html and f"version {api.shop.rec[0]}" in html
    assert html.count('class="item"') == 20  # 10 per column
    unknown = api.http.get(f"/preview?user_id={user}&compare=99", auth=("a", api.admin_key))
    assert "version 99 was never promoted" in unknown.text
    assert 'data-column="compared"' not in unknown.text
    hostile = api.http.get(
        "/preview?q=%3Cscript%3Ealert(1)%3C/script%3E", auth=("a", api.admin_key)
    )
    assert "<script>alert(1)</script>" not in hostile.text and "&lt;script&gt;" in hostile.text
    assert not list(api.settings.serving_events_dir.glob("*.jsonl")) or all(
        x["endpoint"] != "preview" for x in api.spool() if x["kind"] == "served"
    )


def test_the_spool_rotates(tmp_path: Path) -> None:
    from pipelines.data.events_log import Spool, read_spool, served_record

    spool = Spool(tmp_path, rotate_bytes=300)
    for n in range(6):
        spool.append(
            [
                served_record(
                    request_id=f"r{n}", endpoint="search", model="m", version=1, items=["a"]
                )
            ]
        )
    spool.close()
    files = sorted(tmp_path.glob("events-*.jsonl"))
    assert len(files) >= 2
    assert [r["request_id"] for r in read_spool(tmp_path).served] == [f"r{n}" for n in range(6)]
    shutil.copy(files[-1], tmp_path / "events-99999999T999999999999-1.jsonl")
    with (tmp_path / "events-99999999T999999999999-1.jsonl").open("a") as fh:
        fh.write('{"kind":"served","request_id":"cut')
    lines = read_spool(tmp_path)
    assert lines.torn == ["events-99999999T999999999999-1.jsonl"]


def test_the_spool_groups_fsyncs_and_loses_no_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Durable appends from many threads share fsyncs (group commit) and each returns only
    after an fsync that followed its write; answers (durable=False) never wait for one."""
    import threading

    from pipelines.data import events_log
    from pipelines.data.events_log import Spool, read_spool, served_record

    calls = []
    real = events_log.os.fsync

    def slow_fsync(fd: int) -> None:
        calls.append(fd)
        time.sleep(0.01)
        real(fd)

    monkeypatch.setattr(events_log.os, "fsync", slow_fsync)
    spool = Spool(tmp_path, sync_seconds=60)

    def rec(n: int) -> list[dict[str, Any]]:
        return [
            served_record(request_id=f"r{n}", endpoint="search", model="m", version=1, items=[])
        ]

    spool.append(rec(-1), durable=False)
    assert calls == []  # an answer's line does not wait for the disk
    assert spool._synced < spool._written

    def worker(base: int) -> None:
        for n in range(base, base + 20):
            before = spool._written
            spool.append(rec(n))
            assert spool._synced >= before + 1  # its fsync came before append returned

    threads = [threading.Thread(target=worker, args=(t * 100,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spool._synced == spool._written == 161
    assert len(calls) < 160  # fsyncs were shared
    spool.close()
    ids = {r["request_id"] for r in read_spool(tmp_path).served}
    assert ids == {f"r{n}" for t in range(8) for n in range(t * 100, t * 100 + 20)} | {"r-1"}


def test_the_online_store_can_feed_fresher_user_features(
    served_shop: ServedShop, tmp_path: Path
) -> None:
    """serving_feature_source = "online": the shopper's user features come from the Feast
    online store at request time; a changed profile there changes the answer's scores."""
    from pipelines.features.store import materialize, open_store

    settings_kw = {"feature_store_dir": tmp_path / "fs", "serving_feature_source": "online"}
    api = Api(served_shop, tmp_path, **settings_kw)
    try:
        materialize(api.settings, source=served_shop.trained.strong / "features")
        user = _known_user(served_shop)
        online = api.app.state.shopml.online
        values = online.get(user)
        assert values is not None and len(values) == len(STORE_USER_FEATURES)
        assert online.get("nobody-at-all") is None
        before = [i["score"] for i in api.get(f"/v1/recommendations/{user}?k=10").json()["items"]]
        rows = pd.read_parquet(
            served_shop.trained.strong / "features" / "data" / "user_profile.parquet"
        )
        latest = rows[rows["user_id"] == user].sort_values("event_timestamp").tail(1).copy()
        latest["event_timestamp"] = pd.Timestamp.now(tz="UTC")
        for name in STORE_USER_FEATURES:  # a very different shopper from now on
            if name in latest and pd.api.types.is_numeric_dtype(latest[name]):
                latest[name] = latest[name] * 0 + (1000 if name != "segment" else 0)
        open_store(api.settings).write_to_online_store("user_profile", latest)
        assert online.get(user) != values
        after = [i["score"] for i in api.get(f"/v1/recommendations/{user}?k=10").json()["items"]]
        assert after != before
    finally:
        api.close()
