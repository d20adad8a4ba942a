"""The DAG files: they load with zero import errors, touch no database or connection while
parsing, import no heavy pipeline code at parse time, and follow the project's policy."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PARSE = r"""
import json, sys, time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
heavy = sorted(m for m in sys.modules if m in ("mlflow", "lightgbm", "implicit", "feast",
                "great_expectations") or m == "pipelines" or m.startswith("pipelines."))
dags = {}
for dag_id, dag in bag.dags.items():
    dags[dag_id] = {
        "tags": sorted(dag.tags),
        "max_active_runs": dag.max_active_runs,
        "catchup": dag.catchup,
        "doc_md": bool(dag.doc_md),
        "fileloc": dag.fileloc,
        "params": sorted(dag.params.keys()),
        "tasks": {t.task_id: {"owner": t.owner, "retries": t.retries,
                              "downstream": sorted(t.downstream_task_ids),
                              "queue": t.queue, "pool": t.pool,
                              "type": type(t).__name__} for t in dag.tasks},
        "timetable": type(dag.timetable).__name__,
    }
hitl = bag.dags["shopml_retrain"].get_task("await_review")
# the first scheduled run of a DAG that appears 20 minutes after 03:00
from unittest import mock
import pendulum
from airflow.timetables.base import TimeRestriction
from airflow.serialization.decoders import decode_timetable
from airflow.serialization.encoders import encode_timetable
timetable = bag.dags["shopml_retrain"].timetable
timetable = decode_timetable(encode_timetable(getattr(timetable, "timetable", timetable)))  # as the scheduler sees it
with mock.patch("airflow.timetables.trigger.utcnow", return_value=pendulum.datetime(2026, 12, 7, 3, 20, tz="UTC")):
    first = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
    )
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": dags,
                  "heavy": heavy, "seconds": time.perf_counter() - started,
                  "assigned": hitl.assigned_users, "defaults": hitl.defaults,
                  "first_run": first.run_after.isoformat()}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    home = tmp_path_factory.mktemp("airflow")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        # a database that cannot exist: any query or connection at parse time would fail
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////nonexistent/dir/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "SHOPML_REVIEWERS": "alice, bob",
        "SHOPML_TRAINING_POOL": "shopml_training",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def test_every_dag_loads_without_import_errors(parsed: dict) -> None:
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == {"shopml_retrain", "shopml_rollback"}


def test_parsing_imports_no_pipeline_code_and_no_heavy_library(parsed: dict) -> None:
    assert parsed["heavy"] == []


def test_dag_id_is_the_file_name_and_the_docstring_is_the_doc(parsed: dict) -> None:
    for dag_id, dag in parsed["dags"].items():
        assert Path(dag["fileloc"]).stem == dag_id
        assert dag["doc_md"]


def test_policy_tags_owner_retries_one_run_at_a_time(parsed: dict) -> None:
    for dag_id, dag in parsed["dags"].items():
        assert "shopml" in dag["tags"], dag_id
        assert dag["max_active_runs"] == 1 and dag["catchup"] is False, dag_id
        for task_id, t in dag["tasks"].items():
            assert t["owner"] == "shopml", (dag_id, task_id)
    retrain = parsed["dags"]["shopml_retrain"]["tasks"]
    # transient failures are retried; steps that must not run twice are not
    assert all(
        retrain[t]["retries"] >= 1 for t in ("validate_snapshot", "build_features", "train_ranker")
    )
    assert retrain["register_challenger"]["retries"] == 0
    assert retrain["await_review"]["retries"] == 0


def test_retrain_task_order_and_review(parsed: dict) -> None:
    dag = parsed["dags"]["shopml_retrain"]
    assert dag["timetable"] == "AssetOrTimeSchedule"  # daily and on a new snapshot
    assert dag["params"] == ["config", "snapshot"]
    chain = [
        "validate_snapshot", "build_features", "materialize_features", "train_candidates",
        "train_ranker", "register_challenger", "evaluate_challenger",
    ]  # fmt: skip
    tasks = dag["tasks"]
    for a, b in itertools.pairwise(chain):
        assert b in tasks[a]["downstream"], (a, b)
    assert {"gate", "promote_model"} <= set(tasks["evaluate_challenger"]["downstream"])
    assert tasks["gate"]["downstream"] == ["await_review"]
    assert tasks["await_review"]["downstream"] == ["promote_model"]
    assert tasks["await_review"]["type"] == "ApprovalOperator"
    assert tasks["promote_model"]["downstream"] == ["notify"]
    assert parsed["assigned"] == [{"id": "alice", "name": "alice"}, {"id": "bob", "name": "bob"}]
    assert parsed["defaults"] == ["Reject"]  # no answer in time = rejected


def test_a_new_retrain_dag_waits_for_the_next_0300_instead_of_running_a_missed_one(
    parsed: dict,
) -> None:
    """Airflow's CronTriggerTimetable runs the latest 03:00 at once when the DAG appears
    within 2.4 h after it, unless run_immediately is timedelta(0): a stack started at 03:20
    must not start a scheduled run (it would hold the one active run slot)."""
    assert parsed["first_run"] == "2026-12-08T03:00:00+00:00"


def test_the_heavy_steps_go_to_the_training_queue_and_pool(parsed: dict) -> None:
    tasks = parsed["dags"]["shopml_retrain"]["tasks"]
    heavy = {
        "build_features", "train_candidates", "train_ranker", "build_search_index",
        "train_search_ranker",
    }  # fmt: skip
    for name, task in tasks.items():
        expected = ("training", "shopml_training") if name in heavy else ("default", "default_pool")
        assert (task["queue"], task["pool"]) == expected, name


def test_retrain_runs_a_search_branch_with_its_own_gate_and_approval(parsed: dict) -> None:
    tasks = parsed["dags"]["shopml_retrain"]["tasks"]
    chain = [
        "validate_snapshot", "build_search_index", "train_search_ranker",
        "register_search_challenger", "evaluate_search",
    ]  # fmt: skip
    for a, b in itertools.pairwise(chain):
        assert b in tasks[a]["downstream"], (a, b)
    # the branches part after validation: neither waits for the other
    assert {"build_features", "build_search_index"} <= set(tasks["validate_snapshot"]["downstream"])
    assert {"search_gate", "promote_search"} == set(tasks["evaluate_search"]["downstream"])
    assert tasks["search_gate"]["downstream"] == ["await_search_review"]
    assert tasks["await_search_review"]["type"] == "ApprovalOperator"
    assert tasks["await_search_review"]["downstream"] == ["promote_search"]
    assert tasks["promote_search"]["downstream"] == ["notify_search"]
    assert tasks["register_search_challenger"]["retries"] == 0
    recommender = {"gate", "await_review", "promote_model", "notify", "evaluate_challenger"}
    for task in [*chain[1:], "search_gate", "await_search_review", "promote_search"]:
        assert not recommender & set(tasks[task]["downstream"]), task


def test_rollback_takes_a_version_and_a_reason(parsed: dict) -> None:
    dag = parsed["dags"]["shopml_rollback"]
    # who asked is Airflow's triggering user, never a free-text parameter
    assert dag["params"] == ["model", "reason", "version"]
    assert list(dag["tasks"]) == ["rollback_model"]
