"""The serving API and shoppers' privacy: an erased shopper is answered like an anonymous
one and their events are dropped, from the erasure on; everyone else is answered the same;
with pseudonyms on, incoming ids are mapped before anything is looked up or spooled."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.data.privacy import erasure_hash, privacy_key, pseudonym
from pipelines.data.snapshot import Snapshot
from pipelines.keys import create_secret
from pipelines.privacy import erasures
from pipelines.promotion.bucket import open_bucket
from tests.served import ServedShop
from tests.serving.test_api import Api, _known_user

pytestmark = pytest.mark.slow


@pytest.fixture
def api(served_shop: ServedShop, tmp_path: Path) -> Iterator[Api]:
    a = Api(served_shop, tmp_path)
    yield a
    a.close()


def _items(body: dict) -> list[str]:
    return [i["item_id"] for i in body["items"]]


def test_an_erased_shopper_is_anonymous_from_the_erasure_on(api: Api) -> None:
    events = Snapshot.open(api.shop.trained.snapshot).read("events", ["user_id"]).to_pandas()
    user, other = (str(u) for u in events["user_id"].value_counts().index[:2])
    before = api.get(f"/v1/recommendations/{user}?k=10").json()
    assert before["cold_start"] is False
    other_before = api.get(f"/v1/recommendations/{other}?k=10").json()

    refused = api.post("/admin/v1/erasures", json={"user_ids": [user], "reason": "r"})
    assert refused.status_code == 403  # a client key may not erase
    r = api.post("/admin/v1/erasures", key="admin", json={"user_ids": [user], "reason": "GDPR #7"})
    assert r.status_code == 202, r.text
    assert r.json()["request"] == 1 and "privacy forget" in r.json()["pending"]

    after = api.get(f"/v1/recommendations/{user}?k=10").json()
    anonymous = api.get("/v1/recommendations/never-seen-before?k=10").json()
    assert after["cold_start"] is True and _items(after) == _items(anonymous)
    assert after["user_id"] == user  # the answer names who asked; nothing is stored of it
    assert _items(api.get(f"/v1/recommendations/{other}?k=10").json()) == _items(other_before)
    search = api.get(f"/v1/search?q=cat%20litter&k=3&user_id={user}").json()
    assert search["personal"] is False

    rid = search["request_id"]
    shown = _items(search)
    events = [
        {"type": "click", "user_id": user, "item_id": shown[0], "request_id": rid, "position": 1},
        {"type": "purchase", "user_id": other, "item_id": shown[0]},
    ]
    r = api.post("/v1/events", json={"events": events})
    assert r.status_code == 202 and r.json()["accepted"] == 1
    # nothing written after the erasure names the shopper; the ledger holds only a hash
    spool_after = [x for x in api.spool() if x.get("request_id") != before["request_id"]]
    assert all(x.get("user_id") != user for x in spool_after)
    assert any(x.get("user_id") == other for x in spool_after)
    bucket = open_bucket(api.settings.serving_bucket_uri)
    entry = erasures.read(bucket)[0]
    key = privacy_key(api.settings)
    assert erasure_hash(user, key) in entry.body["users"] and user not in str(entry.body)
    assert entry.body["requested_by"] == "api:ops"


def test_an_erasure_recorded_elsewhere_applies_at_the_next_check(api: Api) -> None:
    user = _known_user(api.shop)
    assert api.get(f"/v1/recommendations/{user}").json()["cold_start"] is False
    create_secret(api.settings.privacy_key_file)
    key = privacy_key(api.settings)
    bucket = open_bucket(api.settings.serving_bucket_uri)
    erasures.request(bucket, [erasure_hash(user, key)], reason="cli", requested_by="dpo")
    assert api.get(f"/v1/recommendations/{user}").json()["cold_start"] is False  # not polled yet
    assert api.post("/admin/reload", key="admin").status_code == 200
    assert api.get(f"/v1/recommendations/{user}").json()["cold_start"] is True


def test_without_the_key_an_erasure_list_answers_everyone_anonymously(api: Api) -> None:
    user = _known_user(api.shop)
    bucket = open_bucket(api.settings.serving_bucket_uri)
    erasures.request(bucket, ["0" * 64], reason="elsewhere", requested_by="dpo")
    api.post("/admin/reload", key="admin")
    assert api.get(f"/v1/recommendations/{user}").json()["cold_start"] is True


def test_pseudonymised_serving_refuses_to_start_without_the_key(
    served_shop: ServedShop, tmp_path: Path
) -> None:
    from pipelines.errors import ConfigError

    with pytest.raises(ConfigError, match="no privacy key"):
        Api(served_shop, tmp_path, pseudonymise=True)


def test_pseudonymised_ids_are_looked_up_and_spooled_as_pseudonyms(
    served_shop: ServedShop, tmp_path: Path
) -> None:
    create_secret(tmp_path / "secrets" / "privacy.key")  # where Api's copy looks for it
    a = Api(served_shop, tmp_path, pseudonymise=True)
    try:
        key = privacy_key(a.settings)
        user = _known_user(a.shop)  # a raw id: the model knows it, the mapping hides it
        body = a.post(
            "/v1/recommendations", json={"user_id": user, "session_id": f"{user}-s1"}
        ).json()
        assert body["cold_start"] is True and body["user_id"] == user
        lines = [x for x in a.spool() if x.get("request_id") == body["request_id"]]
        assert lines and lines[0]["user_id"] == pseudonym(user, key)
        assert lines[0]["session_id"] == pseudonym(f"{user}-s1", key, prefix="s_")
        event = {"type": "purchase", "user_id": user, "item_id": "i1", "session_id": "s9"}
        assert a.post("/v1/events", json={"events": [event]}).json()["accepted"] == 1
        spooled = [x for x in a.spool() if x.get("kind") == "event"][-1]
        assert spooled["user_id"] == pseudonym(user, key) and spooled["session_id"].startswith("s_")
        assert user not in json.dumps(a.spool())
    finally:
        a.close()
