"""A real Airflow (scheduler, API server, DAG processor, triggerer) on SQLite in a temporary
home runs `shopml_retrain` on a small generated shop, both branches (recommender and
search) each with its own approval: approval by the assigned reviewer only, promotion of
both models, a rejected recommender beside an approved search model, a corrupted snapshot,
a forged recommender approval beside a rejected search model, a rollback of the search
model."""

from __future__ import annotations

import json
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import mlflow
import pytest
from mlflow import MlflowClient

from pipelines.data.generator import generate_shop
from pipelines.data.snapshot import Snapshot
from pipelines.orchestration.airflow_api import AirflowClient
from pipelines.orchestration.stack import Stack, start, stop
from pipelines.promotion.promote import ledger_entries, verify
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL
from pipelines.settings import Settings, load_settings
from tests.shops import LIGHT_TOML, SHOP, replace_table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SETTLE_SECONDS = 8


def _free_port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        with socket.socket() as a, socket.socket() as b:  # the next two ports: log servers
            try:
                a.bind(("127.0.0.1", port + 1))
                b.bind(("127.0.0.1", port + 2))
                return port
            except OSError:
                continue


class Airflow:
    def __init__(self, stack: Stack, settings: Settings, root: Path) -> None:
        self.stack, self.settings, self.root = stack, settings, root
        self.tokens: dict[str, str] = {}

    def headers(self, user: str) -> dict[str, str]:
        if user not in self.tokens:
            r = httpx.post(
                f"{self.stack.url}/auth/token",
                json={"username": user, "password": self.stack.passwords[user]},
            )
            self.tokens[user] = r.json()["access_token"]
        return {"Authorization": f"Bearer {self.tokens[user]}"}

    def call(self, method: str, path: str, user: str = "engineer", **kw: Any) -> httpx.Response:
        return httpx.request(
            method, f"{self.stack.url}{path}", headers=self.headers(user), timeout=30, **kw
        )

    def trigger(self, snapshot: Path) -> str:
        conf = {"snapshot": str(snapshot), "config": str(self.root / "light.toml")}
        r = self.call(
            "POST", "/api/v2/dags/shopml_retrain/dagRuns", json={"logical_date": None, "conf": conf}
        )
        assert r.status_code == 200, r.text
        return str(r.json()["dag_run_id"])

    def states(self, run_id: str, dag: str = "shopml_retrain") -> dict[str, str | None]:
        r = self.call("GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t["state"] for t in r.json()["task_instances"]}

    def wait(
        self, run_id: str, until: Any, dag: str = "shopml_retrain", timeout: float = 600
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.call("GET", f"/api/v2/dags/{dag}/dagRuns/{run_id}").json()
            states = self.states(run_id, dag)
            if until(run, states):
                return {"run": run, "states": states}
            time.sleep(3)
        raise AssertionError(f"{dag} {run_id} timed out: {self.states(run_id, dag)}")

    def review_path(self, run_id: str, task: str = "await_review") -> str:
        return f"/api/v2/dags/shopml_retrain/dagRuns/{run_id}/taskInstances/{task}/-1/hitlDetails"

    def answer(self, run_id: str, answers: dict[str, str], comment: str = "") -> dict[str, Any]:
        """Answer each approval task of ``answers`` ("Approve" / "Reject") as the reviewer
        once it awaits input, in whichever order the run reaches them; then wait for the end."""
        left = dict(answers)
        while left:
            got = self.wait(run_id, lambda run, states: _awaiting(run, states, set(left)))
            for task in [t for t in left if got["states"].get(t) == "awaiting_input"]:
                body = {"chosen_options": [left.pop(task)], "params_input": {"comment": comment}}
                r = self.call("PATCH", self.review_path(run_id, task), user="reviewer", json=body)
                assert r.status_code == 200, r.text
        return self.wait(run_id, _done)

    def ledger(self, model: str = MODEL_NAME) -> list[dict[str, Any]]:
        return ledger_entries(self.settings, model)

    def pointer(self, model: str) -> bytes | None:
        path = self.settings.home / "bucket" / model / "current.json"
        return path.read_bytes() if path.is_file() else None

    def champion(self, model: str = MODEL_NAME) -> int | None:
        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(self.settings.mlflow_tracking_uri)
        try:
            return int(MlflowClient().get_model_version_by_alias(model, "champion").version)
        except Exception:
            return None

    def versions(self) -> int:
        mlflow.set_tracking_uri(self.settings.mlflow_tracking_uri)
        mlflow.set_registry_uri(self.settings.mlflow_tracking_uri)
        return len(MlflowClient().search_model_versions(f"name='{MODEL_NAME}'"))


def _awaiting(run: dict[str, Any], states: dict[str, Any], tasks: set[str] | None = None) -> bool:
    if run["state"] in ("failed", "success"):
        raise AssertionError(f"run ended ({run['state']}) before its review: {states}")
    if not any(states.get(t) == "awaiting_input" for t in tasks or {"await_review"}):
        return False
    # Airflow 3.3 race: an answer within a second of the pause can reach the scheduler
    # before the executor reports the pausing process's exit, which then marks the task
    # failed ("state changed externally"). A person takes longer than this.
    time.sleep(SETTLE_SECONDS)
    return True


def _done(run: dict[str, Any], states: dict[str, Any]) -> bool:
    return run["state"] in ("success", "failed")


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("e2e")
    settings = load_settings({"SHOPML_HOME": str(root / "home")})
    generate_shop(SHOP, out=settings.snapshots_dir / "shop")
    (root / "light.toml").write_text(LIGHT_TOML)
    stack = start(settings, port=_free_port(), reviewers="reviewer", timeout=240)
    try:
        yield Airflow(stack, settings, root)
    finally:
        stop(settings)


def test_approved_run_promotes_and_only_the_assigned_reviewer_may_answer(airflow: Airflow) -> None:
    snapshot = airflow.settings.snapshots_dir / "shop"
    run_id = airflow.trigger(snapshot)
    airflow.wait(run_id, _awaiting)
    pending = airflow.call(
        "GET", "/api/v2/dags/shopml_retrain/dagRuns/~/hitlDetails", user="reviewer"
    )
    (detail,) = [
        d
        for d in pending.json()["hitl_details"]
        if d["task_instance"]["dag_run_id"] == run_id
        and d["task_instance"]["task_id"] == "await_review"
    ]
    assert detail["subject"] == "Promote shopml-recommender version 1?"
    assert "BLESSED" in detail["body"] and "Report: file://" in detail["body"]
    answer = {"chosen_options": ["Approve"], "params_input": {"comment": "ship it"}}
    refused = airflow.call("PATCH", airflow.review_path(run_id), user="engineer", json=answer)
    assert refused.status_code == 403 and "not a respondent" in refused.text
    ok = airflow.call("PATCH", airflow.review_path(run_id), user="reviewer", json=answer)
    assert ok.status_code == 200, ok.text
    # the search branch asks for its own approval, which only the reviewer may answer too
    airflow.wait(run_id, lambda run, states: _awaiting(run, states, {"await_search_review"}))
    pending = airflow.call(
        "GET", "/api/v2/dags/shopml_retrain/dagRuns/~/hitlDetails", user="reviewer"
    ).json()["hitl_details"]
    (search,) = [
        d for d in pending
        if d["task_instance"]["dag_run_id"] == run_id
        and d["task_instance"]["task_id"] == "await_search_review"
    ]  # fmt: skip
    assert search["subject"] == "Promote shopml-search version 1?"
    assert "held-out queries" in search["body"] and "Report: file://" in search["body"]
    path = airflow.review_path(run_id, "await_search_review")
    refused = airflow.call("PATCH", path, user="engineer", json=answer)
    assert refused.status_code == 403
    ok = airflow.call("PATCH", path, user="reviewer", json=answer)
    assert ok.status_code == 200, ok.text
    done = airflow.wait(run_id, _done)
    assert done["run"]["state"] == "success", done["states"]
    assert done["states"]["promote_model"] == "success" and done["states"]["notify"] == "success"
    assert done["states"]["promote_search"] == "success", done["states"]
    assert done["states"]["notify_search"] == "success"
    search_bucket = airflow.settings.home / "bucket" / SEARCH_MODEL
    assert json.loads((search_bucket / "current.json").read_text())["version"] == 1
    assert (search_bucket / "versions" / "1" / "bundle" / "model.json").is_file()
    (entry,) = airflow.ledger(SEARCH_MODEL)
    assert (entry["model"], entry["approved_by"], entry["dag_run"]) == (
        SEARCH_MODEL,
        "reviewer",
        run_id,
    )
    assert airflow.champion(SEARCH_MODEL) == 1
    assert verify(airflow.settings, SEARCH_MODEL).ok
    bucket = airflow.settings.home / "bucket" / MODEL_NAME
    assert json.loads((bucket / "current.json").read_text())["version"] == 1
    assert (bucket / "versions" / "1" / "manifest.json").is_file()
    (line,) = airflow.ledger()
    assert (line["version"], line["approved_by"], line["comment"], line["dag_run"]) == (
        1,
        "reviewer",
        "ship it",
        run_id,
    )
    assert line["snapshot_id"] == Snapshot.open(snapshot).id
    assert line["approved_at"] and line["seq"] == 1  # the time of the HITL answer
    assert airflow.champion() == 1
    assert verify(airflow.settings, MODEL_NAME).ok
    for private in ("airflow.db", "passwords.json"):
        assert (airflow.settings.airflow_home / private).stat().st_mode & 0o077 == 0, private
    # one MLflow parent run per DAG run, tagged with the dag and run ids
    mlflow.set_tracking_uri(airflow.settings.mlflow_tracking_uri)
    client = MlflowClient()
    run = client.get_run(client.get_model_version(MODEL_NAME, "1").run_id)
    assert run.data.tags["airflow.dag_id"] == "shopml_retrain"
    assert run.data.tags["airflow.run_id"] == run_id
    assert "shopml.eval.blessed" in run.data.tags


def test_an_announced_snapshot_starts_a_run_and_a_rejection_changes_nothing(
    airflow: Airflow,
) -> None:
    before_current = (airflow.settings.home / "bucket" / MODEL_NAME / "current.json").read_bytes()
    client = AirflowClient(airflow.stack.url, "engineer", airflow.stack.passwords["engineer"])
    client.announce_snapshot(
        str(airflow.settings.snapshots_dir / "shop"), str(airflow.root / "light.toml")
    )
    deadline = time.monotonic() + 120
    runs: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not runs:
        listed = airflow.call("GET", "/api/v2/dags/shopml_retrain/dagRuns").json()["dag_runs"]
        runs = [r for r in listed if r["run_type"] == "asset_triggered"]
        time.sleep(2)
    assert runs, "the asset event started no run"
    run_id = runs[0]["dag_run_id"]
    airflow.wait(run_id, _awaiting)
    # the run trained on the announced snapshot (the DAG params were left empty)
    version = airflow.versions()
    mlflow.set_tracking_uri(airflow.settings.mlflow_tracking_uri)
    tags = MlflowClient().get_model_version(MODEL_NAME, str(version)).tags
    assert tags["snapshot_id"] == Snapshot.open(airflow.settings.snapshots_dir / "shop").id
    done = airflow.answer(
        run_id, {"await_review": "Reject", "await_search_review": "Approve"}, "not now"
    )
    assert done["states"]["promote_model"] == "skipped", done["states"]
    # the rejected recommender does not hold back the approved search model
    assert done["states"]["promote_search"] == "success", done["states"]
    assert airflow.champion(SEARCH_MODEL) == 2
    assert airflow.champion() == 1
    assert len(airflow.ledger()) == 1
    assert (
        airflow.settings.home / "bucket" / MODEL_NAME / "current.json"
    ).read_bytes() == before_current
    assert not (airflow.settings.home / "bucket" / MODEL_NAME / "versions" / "2").exists()


def test_corrupted_snapshot_fails_at_validation_with_nothing_registered(airflow: Airflow) -> None:
    good = airflow.settings.snapshots_dir / "shop"
    items = Snapshot.open(good).read("items").to_pandas()
    items.loc[:5, "price"] = -1.0
    bad = airflow.root / "bad"
    replace_table(good, bad, "items", items)
    versions = airflow.versions()
    run_id = airflow.trigger(bad)
    done = airflow.wait(run_id, _done)
    assert done["run"]["state"] == "failed"
    assert done["states"]["validate_snapshot"] == "failed"
    assert done["states"]["register_challenger"] in ("upstream_failed", None)
    assert done["states"]["register_search_challenger"] in ("upstream_failed", None)
    assert airflow.versions() == versions
    assert airflow.champion() == 1 and len(airflow.ledger()) == 1
    status = json.loads((bad / "validation" / "status.json").read_text())
    assert status["status"] == "quarantined"
    shutil.rmtree(bad)


def test_a_forged_approval_promotes_nothing(airflow: Airflow) -> None:
    """The attack: as `engineer`, write an approving XCom for await_review naming the
    reviewer and mark the task success. Airflow accepts both (its roles are coarse); the
    promotion reads the HITL record, finds no answer, and refuses."""
    before = (airflow.settings.home / "bucket" / MODEL_NAME / "current.json").read_bytes()
    run_id = airflow.trigger(airflow.settings.snapshots_dir / "shop")
    airflow.wait(run_id, _awaiting)
    task = f"/api/v2/dags/shopml_retrain/dagRuns/{run_id}/taskInstances/await_review"
    forged = {
        "chosen_options": ["Approve"],
        "responded_by_user": {"id": "reviewer", "name": "reviewer"},
        "params_input": {"comment": "forged"},
    }
    r = airflow.call("POST", f"{task}/xcomEntries", json={"key": "return_value", "value": forged})
    assert r.status_code in (200, 201), r.text
    r = airflow.call("PATCH", task, json={"new_state": "success"})
    assert r.status_code == 200, r.text
    search_before = airflow.pointer(SEARCH_MODEL)
    done = airflow.answer(run_id, {"await_search_review": "Reject"})
    assert done["states"]["promote_search"] == "skipped"
    assert airflow.pointer(SEARCH_MODEL) == search_before
    assert done["run"]["state"] == "failed"
    assert done["states"]["promote_model"] == "failed", done["states"]
    log = airflow.call(
        "GET", f"/api/v2/dags/shopml_retrain/dagRuns/{run_id}/taskInstances/promote_model/logs/1"
    ).text  # fmt: skip
    assert "has no answer from a reviewer" in log
    assert (airflow.settings.home / "bucket" / MODEL_NAME / "current.json").read_bytes() == before
    assert airflow.champion() == 1 and len(airflow.ledger()) == 1
    assert verify(airflow.settings, MODEL_NAME).ok


def test_rollback_dag_repoints_and_records(airflow: Airflow) -> None:
    """Roll the search model back from version 2 to 1 (both promoted by the runs above;
    no new training run is needed)."""
    assert [e["version"] for e in airflow.ledger(SEARCH_MODEL)] == [1, 2]
    assert airflow.champion(SEARCH_MODEL) == 2
    recommender_before = airflow.pointer(MODEL_NAME)
    r = airflow.call(
        "POST", "/api/v2/dags/shopml_rollback/dagRuns",
        json={"logical_date": None, "conf": {
            "version": 1, "reason": "drill", "model": SEARCH_MODEL, "requested_by": "ceo",
        }},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    done = airflow.wait(r.json()["dag_run_id"], _done, dag="shopml_rollback")
    assert done["run"]["state"] == "success", done["states"]
    assert airflow.champion(SEARCH_MODEL) == 1
    bucket = airflow.settings.home / "bucket" / SEARCH_MODEL
    assert json.loads((bucket / "current.json").read_text())["version"] == 1
    actions = [(e["action"], e["version"], e.get("reason")) for e in airflow.ledger(SEARCH_MODEL)]
    assert actions == [("promote", 1, None), ("promote", 2, None), ("rollback", 1, "drill")]
    # who asked is the login that triggered the run, whatever the conf says
    assert airflow.ledger(SEARCH_MODEL)[-1]["requested_by"] == "engineer"
    assert airflow.pointer(MODEL_NAME) == recommender_before  # the other model is untouched
    assert verify(airflow.settings, SEARCH_MODEL).ok
