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
        if url.endswith("/taskInstances/await_review/-1/hitlDetails") and method == "GET":
            run = url.split("/dagRuns/")[1].split("/")[0]
            return httpx.Response(200, json={  # a request nobody answered
                "task_instance": {"dag_id": "shopml_retrain", "dag_run_id": run, "task_id": "await_review"},
                "assigned_users": [{"id": "reviewer", "name": "reviewer"}], "response_received": False,
            })  # fmt: skip
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
    assert (
        res.exit_code == 0 and "approved shopml-recommender in manual__1 as reviewer" in res.output
    )
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


def test_trigger_retrain_and_rollback(
    airflow: FakeAirflow, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.data.generator import GeneratorConfig, generate_shop
    from pipelines.promotion.bucket import open_bucket
    from pipelines.promotion.ledger import append

    snapshot = tmp_path / "s"
    generate_shop(GeneratorConfig(users=100, items=100, events=1000, days=10, judged_queries=2), out=snapshot)  # fmt: skip
    res = runner.invoke(app, ["dags", "trigger", "retrain", "--user", "eng", "--snapshot", str(snapshot)])  # fmt: skip
    assert res.exit_code == 0 and "triggered shopml_retrain run manual__2" in res.output
    assert airflow.calls[-1][2] == {"logical_date": None, "conf": {"snapshot": str(snapshot.resolve()), "config": ""}}  # fmt: skip
    calls = len(airflow.calls)
    # refused before anything is triggered: a missing snapshot, a config with a typo
    res = runner.invoke(app, ["dags", "trigger", "retrain", "--user", "eng", "--snapshot", "/nope"])
    assert res.exit_code == 2 and "/nope: does not exist" in res.output
    typo = tmp_path / "p.toml"
    typo.write_text("[ranker]\nlabel_day = 3\n")
    res = runner.invoke(app, ["dags", "trigger", "retrain", "--user", "eng", "--config", str(typo)])
    assert res.exit_code == 2 and "label_day" in res.output
    res = runner.invoke(app, ["rollback", "--to", "2", "--reason", "CTR dropped", "--user", "eng"])
    assert res.exit_code == 2 and "version 2 was never promoted (promoted: none)" in res.output
    assert len(airflow.calls) == calls
    bucket = tmp_path / "bucket"
    monkeypatch.setenv("SHOPML_SERVING_BUCKET_URI", bucket.as_uri())
    for version in (2, 3):
        append(
            open_bucket(bucket.as_uri()),
            "shopml-recommender",
            {"action": "promote", "version": version},
        )
    res = runner.invoke(app, ["rollback", "--to", "2", "--reason", "CTR dropped", "--user", "eng"])
    assert res.exit_code == 0 and "shopml_rollback" in res.output
    assert airflow.calls[-1][1].endswith("/api/v2/dags/shopml_rollback/dagRuns")
    # who asked is not sent: the DAG takes Airflow's authenticated triggering user
    assert airflow.calls[-1][2]["conf"] == {
        "version": 2,
        "reason": "CTR dropped",
        "model": "shopml-recommender",
    }
    res = runner.invoke(app, ["rollback", "--to", "2", "--reason", "x", "--user", "eng"])
    assert res.exit_code == 2 and "say why" in res.output
    res = runner.invoke(app, ["dags", "trigger", "nightly", "--user", "eng"])
    assert res.exit_code == 2 and "unknown DAG 'nightly'" in res.output


def test_no_terminal_and_no_password_is_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOPML_AIRFLOW_PASSWORD", raising=False)
    res = runner.invoke(app, ["review", "list", "--user", "reviewer"])
    assert res.exit_code == 2 and "set SHOPML_AIRFLOW_PASSWORD" in res.output


def test_promotions_log_reads_the_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.promotion.bucket import open_bucket
    from pipelines.promotion.ledger import append

    bucket = tmp_path / "bucket"
    monkeypatch.setenv("SHOPML_SERVING_BUCKET_URI", bucket.as_uri())
    res = runner.invoke(app, ["promotions", "log"])
    assert res.exit_code == 0 and "no promotions yet" in res.output
    for version, note in ((2, "first"), (3, "a much longer comment than any column could hold")):
        append(open_bucket(bucket.as_uri()), "shopml-recommender",
               {"time": "2026-11-28T06:00:00+00:00", "action": "promote", "version": version,
                "previous_version": version - 1, "approved_by": "reviewer",
                "snapshot_id": "abcdef1234567890", "comment": note})  # fmt: skip
    res = runner.invoke(app, ["promotions", "log"], env={"COLUMNS": "80"})
    assert res.exit_code == 0
    assert "promote" in res.output and "reviewer" in res.output and "2026-11-28 06:00" in res.output
    assert max(len(line) for line in res.output.splitlines()) <= 80
    res = runner.invoke(app, ["promotions", "log", "--json"])
    lines = res.output.splitlines()
    assert len(lines) == 2 and [json.loads(line)["version"] for line in lines] == [2, 3]
    assert json.loads(lines[1])["prev_sha256"] is not None


def test_promote_needs_a_dag_run_whose_approval_it_can_read(airflow: FakeAirflow) -> None:
    res = runner.invoke(app, ["promote", "--version", "7", "--user", "eng"])
    assert res.exit_code == 2 and "--dag-run" in res.output
    res = runner.invoke(app, ["promote", "--version", "7", "--dag-run", "r1", "--user", "eng"])
    assert res.exit_code == 2
    assert "shopml_retrain run r1 has no answer from a reviewer" in " ".join(res.output.split())


def test_config_prints_no_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_REDIS_URL", "redis://:hunter2-secret@cache:6379/0")
    monkeypatch.setenv("SHOPML_MLFLOW_TRACKING_URI", "postgresql://ml:hunter2-secret@db/mlflow")
    res = runner.invoke(app, ["config"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    assert "hunter2" not in res.output
    assert (
        "redis://:***@cache:6379/0" in res.output and "postgresql://ml:***@db/mlflow" in res.output
    )


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
