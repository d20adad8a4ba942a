"""The loop closes: answers served and events posted become the next snapshot's events
and queries, with request ids and positions, and the snapshot validates."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.data.importers.events_log import import_events_log
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ContractError
from pipelines.validation.validate import validate_snapshot
from tests.served import ServedShop
from tests.serving.test_api import Api, _known_user

pytestmark = pytest.mark.slow


def test_posted_events_become_contract_events_and_queries(
    served_shop: ServedShop, tmp_path: Path
) -> None:
    api = Api(served_shop, tmp_path)
    try:
        user = _known_user(served_shop)
        search = api.get(f"/v1/search?q=cat%20litter&k=5&user_id={user}").json()
        s_rid, s_items = search["request_id"], [i["item_id"] for i in search["items"]]
        recs = api.post("/v1/recommendations", json={"session_id": "s9", "k": 4}).json()
        r_rid, r_items = recs["request_id"], [i["item_id"] for i in recs["items"]]
        events = [
            *({"type": "impression", "user_id": user, "item_id": i, "request_id": s_rid,
               "position": n + 1} for n, i in enumerate(s_items[:3])),
            {"type": "click", "user_id": user, "item_id": s_items[1], "request_id": s_rid,
             "position": 2, "ts": "2026-12-01T10:00:00Z"},
            {"type": "add_to_cart", "user_id": user, "item_id": s_items[1], "request_id": s_rid,
             "ts": "2026-12-01T10:01:00+00:00"},
            {"type": "click", "user_id": "visitor-9", "item_id": r_items[0], "request_id": r_rid,
             "position": 1, "session_id": "s9", "ts": "2026-12-01T10:02:00Z"},
            {"type": "purchase", "user_id": "visitor-9", "item_id": "not-in-catalog",
             "ts": "2026-12-01T10:03:00Z"},
        ]  # fmt: skip
        assert api.post("/v1/events", json={"events": events}).status_code == 202
    finally:
        api.close()
    spool = api.settings.serving_events_dir
    out = import_events_log(spool, base=served_shop.trained.snapshot, out=tmp_path / "next")
    base = Snapshot.open(served_shop.trained.snapshot)
    snap = Snapshot.open(out.path)
    ev = snap.read("events").to_pandas()
    new = ev[ev["request_id"].notna()]
    assert len(ev) == base.rows("events") + 3  # the unknown item's purchase is dropped
    click = new[new["event_type"] == "search_click"].iloc[0]
    assert click["item_id"] == s_items[1] and click["position"] == 2
    assert click["query_id"] == s_rid and click["request_id"] == s_rid
    assert click["ts"] == pd.Timestamp("2026-12-01T10:00:00Z")
    cart = new[new["event_type"] == "add_to_cart"].iloc[0]
    assert cart["query_id"] == s_rid  # the search labels grade the cart after the query
    view = new[new["event_type"] == "view"].iloc[0]
    assert view["request_id"] == r_rid and view["position"] == 1 and view["query_id"] is None
    assert view["user_id"] == "visitor-9" and view["session_id"] == "s9"
    q = snap.read("queries").to_pandas().set_index("query_id")
    row = q.loc[s_rid]
    assert row["text"] == "cat litter" and row["user_id"] == user
    assert list(row["shown_item_ids"]) == s_items[:3]  # cut after the last impression
    assert list(row["clicked_item_ids"]) == [s_items[1]]
    users = snap.read("users").to_pandas()
    assert "visitor-9" in set(users["user_id"]) and len(users) == base.rows("users") + 1
    assert any("dropped 1 events on items the catalog does not hold" in n for n in out.notes)
    assert validate_snapshot(snapshot_uri=snap.path).accepted
    # importing the same spool on top of the new snapshot adds nothing twice
    again = import_events_log(spool, base=snap.path, out=tmp_path / "again")
    assert again.rows["events"] == snap.rows("events") and again.rows["queries"] == snap.rows(
        "queries"
    )


def test_a_bad_spool_line_is_named(served_shop: ServedShop, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "events-1-1.jsonl").write_text(
        '{"kind":"event","type":"teleport","user_id":"u1","item_id":"i1","ts":"2026-01-01T00:00:00Z"}\n'
    )
    with pytest.raises(ContractError, match=r"events-1-1.jsonl, line 1.*type.*teleport"):
        import_events_log(spool, base=served_shop.trained.snapshot, out=tmp_path / "x")
    (spool / "events-1-1.jsonl").write_text(
        '{"kind":"event","type":"click","user_id":"u1","item_id":"i001","ts":"soon"}\n'
    )
    with pytest.raises(ContractError, match=r"line 1.*ts.*'soon' is not an ISO 8601 time"):
        import_events_log(spool, base=served_shop.trained.snapshot, out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
