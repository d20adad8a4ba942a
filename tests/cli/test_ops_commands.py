"""The reviewer and engineer commands: ledger, promote refusal, and the Airflow REST calls
(against a fake Airflow that answers like the real API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pipelines.cli import app

runner = CliRunner()


class FakeAirflow:
    """Answers /auth/token and the /api/v2 calls the CLI makes; records the requests."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def post(self, url: str, json: Any = None, **_: Any) -> httpx.Response:
        self.calls.append(("POST", url, json))
        if json["password"] != "secret":
            return httpx.Response(401, json={"detail": "Invalid credentials"})
        return httpx.Response(201, json={"access_token": f"token-{json['username']}"})

    def request(
        self,
        method: str,
        url: str,
        headers: Any = None,
        json: Any = None,
        params: Any = None,
        **_: Any,
    ) -> httpx.Response:
        self.calls.append((method, url, json if json is not None else params))
        user = headers["Authorization"].removeprefix("Bearer token-")
        if url.endswith("/hitlDetails") and method == "GET":
            return httpx.Response(200, json={"total_entries": 1, "hitl_details": [{
                "subject": "Promote shopml-recommender version 3?", "body": "## ✅ BLESSED",
                "created_at": "2026-11-28T06:00:00Z", "response_received": False,
                "assigned_users": [{"id": "reviewer", "name": "reviewer"}],
                "task_instance": {"dag_run_id": "manual__1"},
            }]})  # fmt: skip
        if url.endswith("/hitlDetails") and method == "PATCH":
            if user != "reviewer":
                return httpx.Response(
                    403, json={"detail": f"User {user} is not a respondent for the task"}
                )
            return httpx.Response(
                200, json={"responded_by_user": {"id": user, "name": user}, **json}
            )
        if url.endswith("/dagRuns") and method == "POST":
            return httpx.Response(200, json={"dag_run_id": "manual__2", "state": "queued"})
        return httpx.Response(404, json={"detail": "nothing here"})


@pytest.fixture
def airflow(monkeypatch: pytest.MonkeyPatch) -> FakeAirflow:
    fake = FakeAirflow()
    monkeypatch.setattr(httpx, "post", fake.post)
    monkeypatch.setattr(httpx, "request", fake.request)
    monkeypatch.setenv("SHOPML_AIRFLOW_PASSWORD", "secret")
    monkeypatch.setenv("SHOPML_AIRFLOW_API_URL", "http://airflow.test")
    return fake


def test_review_list_approve_and_a_non_assigned_user(airflow: FakeAirflow) -> None:
    res = runner.invoke(app, ["review", "list", "--user", "reviewer"])
    assert res.exit_code == 0, res.output
    assert "manual__1" in res.output and "version 3" in res.output and "BLESSED" in res.output
    res = runner.invoke(
        app, ["review", "approve", "manual__1", "--user", "reviewer", "--comment", "looks good"]
    )
    assert res.exit_code == 0 and "approved manual__1 as reviewer" in res.output
    method, url, body = airflow.calls[-1]
    assert method == "PATCH"
    assert (
        url
        == "http://airflow.test/api/v2/dags/shopml_retrain/dagRuns/manual__1/taskInstances/await_review/-1/hitlDetails"
    )
    assert body == {"chosen_options": ["Approve"], "params_input": {"comment": "looks good"}}
    res = runner.invoke(app, ["review", "reject", "manual__1", "--user", "mallory"])
    assert res.exit_code == 2
    assert "Airflow refused 'mallory': User mallory is not a respondent for the task" in res.output


def test_wrong_password_and_airflow_down(
    airflow: FakeAirflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOPML_AIRFLOW_PASSWORD", "nope")
    res = runner.invoke(app, ["review", "list", "--user", "reviewer"])
    assert res.exit_code == 2 and "login as 'reviewer' failed: Invalid credentials" in res.output

    def down(*_: Any, **__: Any) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    monkeypatch.setattr(httpx, "post", down)
    res = runner.invoke(app, ["review", "list", "--user", "reviewer"])
    assert res.exit_code == 2 and "cannot reach Airflow at http://airflow.test" in res.output


def test_trigger_retrain_and_rollback(airflow: FakeAirflow) -> None:
    res = runner.invoke(app, ["dags", "trigger", "retrain", "--user", "eng", "--snapshot", "/s"])
    assert res.exit_code == 0 and "triggered shopml_retrain run manual__2" in res.output
    assert airflow.calls[-1][2] == {"logical_date": None, "conf": {"snapshot": "/s", "config": ""}}
    res = runner.invoke(app, ["rollback", "--to", "2", "--reason", "CTR dropped", "--user", "eng"])
    assert res.exit_code == 0 and "shopml_rollback" in res.output
    assert airflow.calls[-1][1].endswith("/api/v2/dags/shopml_rollback/dagRuns")
    assert airflow.calls[-1][2]["conf"] == {
        "version": 2,
        "reason": "CTR dropped",
        "requested_by": "eng",
    }
    res = runner.invoke(app, ["rollback", "--to", "2", "--reason", "x", "--user", "eng"])
    assert res.exit_code == 2 and "say why" in res.output
    res = runner.invoke(app, ["dags", "trigger", "nightly", "--user", "eng"])
    assert res.exit_code == 2 and "unknown DAG 'nightly'" in res.output


def test_promotions_log_reads_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = tmp_path / "bucket"
    monkeypatch.setenv("SHOPML_SERVING_BUCKET_URI", bucket.as_uri())
    res = runner.invoke(app, ["promotions", "log"])
    assert res.exit_code == 0 and "no promotions yet" in res.output
    (bucket / "shopml-recommender").mkdir(parents=True)
    line = {"time": "2026-11-28T06:00:00+00:00", "action": "promote", "version": 3, "previous_version": 2,
            "approved_by": "reviewer", "snapshot_id": "abcdef1234567890", "comment": "ok"}  # fmt: skip
    (bucket / "shopml-recommender" / "ledger.jsonl").write_text(json.dumps(line) + "\n")
    res = runner.invoke(app, ["promotions", "log"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "promote" in res.output and "reviewer" in res.output and "abcdef123456" in res.output
    res = runner.invoke(app, ["promotions", "log", "--json"])
    assert json.loads(res.output)["version"] == 3


def test_promote_refuses_an_unknown_version(tmp_path: Path) -> None:
    res = runner.invoke(app, ["promote", "--version", "7"])
    assert res.exit_code == 2 and "has no version 7" in res.output


def test_announce_a_snapshot_posts_an_asset_event(
    airflow: FakeAirflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.data.generator import GeneratorConfig, generate_shop

    generate_shop(
        GeneratorConfig(users=100, items=100, events=1000, days=10, judged_queries=2),
        out=tmp_path / "s",
    )

    def request(
        method: str, url: str, headers: Any = None, json: Any = None, params: Any = None, **_: Any
    ) -> httpx.Response:
        airflow.calls.append((method, url, json if json is not None else params))
        if url.endswith("/api/v2/assets"):
            return httpx.Response(
                200, json={"assets": [{"id": 7, "name": "shopml-snapshot"}], "total_entries": 1}
            )
        return httpx.Response(200, json={"id": 99, **json})

    monkeypatch.setattr(httpx, "request", request)
    res = runner.invoke(app, ["dags", "announce", str(tmp_path / "s"), "--user", "eng"])
    assert res.exit_code == 0, res.output
    assert "asset event 99" in " ".join(res.output.split())
    assert airflow.calls[-1][2] == {
        "asset_id": 7,
        "extra": {"snapshot": str((tmp_path / "s").resolve())},
    }
