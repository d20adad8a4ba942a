"""``make demo``'s serving part: the API started beside Airflow (a process of its own,
with the embedded profile's generated keys), every endpoint called once, and the
requests that run while a promotion swaps the version."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from pipelines.orchestration import demo
from pipelines.orchestration.stack import start_serving, stop
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL
from tests.served import ServedShop

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def test_the_demo_serves_tours_and_swaps_under_traffic(
    served_shop: ServedShop, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = served_shop.copy(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serving = start_serving(settings, port=port, poll_seconds=0.5)
    try:
        assert serving.client_key_file.stat().st_mode & 0o777 == 0o600  # generated, private
        demo._wait_served(
            serving, {MODEL_NAME: served_shop.rec[0], SEARCH_MODEL: served_shop.search[0]}
        )
        demo.tour(serving, served_shop.trained.snapshot)
        out = capsys.readouterr().out
        for call in ("GET /v1/models", "GET /v1/recommendations/", "POST /v1/recommendations",
                     "GET /v1/search?q=", "GET /v1/items/", "POST /v1/events", "GET /readyz",
                     "GET /metrics"):  # fmt: skip
            assert call in out, call
        assert (
            "#1 " in out
            and "POST /v1/events (3 impressions and a click on the search answer): 202" in out
        )
        assert "GET /v1/search?q=<600 characters>: 422 q:" in out
        user, query = demo._shopper_and_query(served_shop.trained.snapshot)
        with demo.Traffic(serving, user, query) as traffic:
            served_shop.promote(MODEL_NAME, 1, settings)
            demo._wait_served(serving, {MODEL_NAME: served_shop.rec[1]}, timeout=30)
            time.sleep(1.5)  # answers by the new version too
        traffic.report()
        report = capsys.readouterr().out
        assert traffic.seen and all(code == 200 for _, code, _ in traffic.seen)
        assert "failed: 0" in report
        assert f"versions served in order [{served_shop.rec[0]}, {served_shop.rec[1]}]" in report
    finally:
        assert "serving" in stop(settings)
