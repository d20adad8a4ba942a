"""
### shopml_retrain

Daily, and whenever a new snapshot lands (the `shopml-snapshot` asset): validate the
snapshot, then two branches, each with its own gate, approval and promotion:

- **recommender**: build and serve its features, train the candidate generators and the
  LightGBM re-ranker, register the `shopml-recommender` challenger, evaluate it against
  the champion on the snapshot's frozen evaluation set;
- **search**: index the catalog and tune the first stage, fit the search re-ranker,
  register the `shopml-search` challenger, evaluate it on the held-out queries against
  its champion, BM25 and the unpersonalised hybrid.

Only a challenger its gate blesses is put to a reviewer (`await_review`,
`await_search_review`); an approval promotes that model to the serving bucket (manifest,
pointer, ledger, MLflow alias); a rejection or no answer within the response time leaves
its champion unchanged. One branch failing or rejected does not stop the other. Tasks run
one at a time by default (`SHOPML_MAX_ACTIVE_TASKS`: the embedded stores are SQLite). The
heavy steps (features, candidates, rankers, search index) go to the Celery queue `training`
and the pool `SHOPML_TRAINING_POOL` (default `default_pool`), so a worker that does not
serve `training` never takes them.

Params: `snapshot` (a snapshot folder; empty = the newest under `$SHOPML_HOME/snapshots`),
`config` (a pipeline TOML file with `[train]`, `[evaluate]`, `[gate]`, ...; empty = defaults).
Reviewers: `SHOPML_REVIEWERS` (comma-separated logins). See docs/operations.md.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable, Param, dag, task

# A task's XCom value: a RunPayload as a dict when the task runs, an XComArg while the DAG
# is wired (TaskFlow passes upstream outputs as arguments; Airflow's types do not model that).
XCom = Any
SNAPSHOT_ASSET = Asset(name="shopml-snapshot", uri="shopml://snapshots/latest")
# Read at parse time from the environment only (no settings files, no connections).
# The heavy steps: a worker serving the queue "training", and a pool that bounds how many
# run at once across the cluster (the LocalExecutor of the embedded stack ignores queues).
TRAINING: dict[str, Any] = {
    "queue": "training",
    "pool": os.environ.get("SHOPML_TRAINING_POOL") or "default_pool",
}
ASSIGNED = [
    {"id": n.strip(), "name": n.strip()}
    for n in os.environ.get("SHOPML_REVIEWERS", "reviewer").split(",")
    if n.strip()
]


@dag(
    dag_id="shopml_retrain",
    schedule=AssetOrTimeSchedule(
        timetable=CronTriggerTimetable("0 3 * * *", timezone="UTC", run_immediately=timedelta(0)),
        assets=SNAPSHOT_ASSET,
    ),
    # No start_date: the first scheduled run waits for the next 03:00 instead of catching
    # up the latest missed one the moment the DAG appears. Airflow 3.3 treats
    # run_immediately=False (its default) like None: a DAG that appears within 10% of the
    # cron period after 03:00 (2.4 h) runs the 03:00 run at once; timedelta(0) never does.
    # Snapshots and manual triggers run at once.
    catchup=False,
    max_active_runs=1,
    # the embedded profile's MLflow and online store are SQLite: one writer at a time
    max_active_tasks=int(os.environ.get("SHOPML_MAX_ACTIVE_TASKS", "1")),
    default_args={"owner": "shopml", "retries": 2, "retry_delay": timedelta(minutes=1)},
    params={
        "snapshot": Param("", type="string", description="snapshot folder; empty: the newest"),
        "config": Param("", type="string", description="pipeline TOML file; empty: defaults"),
    },
    tags=["shopml", "retrain"],
    doc_md=__doc__,
)
def shopml_retrain() -> None:
    @task
    def validate_snapshot(**context: Any) -> XCom:
        from pipelines.orchestration.steps import validate_step
        from pipelines.orchestration.tasks import run_step

        params = context["params"]
        # a run triggered by a `shopml-snapshot` event takes the snapshot (and config) it names
        announced = [
            e.extra
            for events in (context.get("triggering_asset_events") or {}).values()
            for e in events
            if e.extra.get("snapshot")
        ]
        extra = announced[-1] if announced else {}
        return run_step(
            validate_step,
            snapshot=params.get("snapshot") or extra.get("snapshot") or None,
            config=params.get("config") or extra.get("config") or None,
            dag_run_id=context["run_id"],
        ).to_xcom()

    @task(**TRAINING)
    def build_features(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, features_step
        from pipelines.orchestration.tasks import run_step

        return run_step(features_step, RunPayload.from_xcom(info)).to_xcom()

    @task
    def materialize_features(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, materialize_step
        from pipelines.orchestration.tasks import run_step

        return run_step(materialize_step, RunPayload.from_xcom(info)).to_xcom()

    @task(**TRAINING)
    def train_candidates(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, candidates_step
        from pipelines.orchestration.tasks import run_step

        return run_step(candidates_step, RunPayload.from_xcom(info)).to_xcom()

    @task(**TRAINING)
    def train_ranker(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, ranker_step
        from pipelines.orchestration.tasks import run_step

        return run_step(ranker_step, RunPayload.from_xcom(info)).to_xcom()

    @task(retries=0)  # registering twice would make two versions
    def register_challenger(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, register_step
        from pipelines.orchestration.tasks import run_step

        return run_step(register_step, RunPayload.from_xcom(info)).to_xcom()

    @task
    def evaluate_challenger(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, evaluate_step
        from pipelines.orchestration.tasks import run_step

        return run_step(evaluate_step, RunPayload.from_xcom(info)).to_xcom()

    @task.short_circuit
    def gate(info: XCom) -> bool:
        """Not blessed: stop here, with the verdict recorded on the model version."""
        return bool(info["blessed"])

    await_review = ApprovalOperator(
        task_id="await_review",
        subject=(
            "Promote shopml-recommender version "
            "{{ ti.xcom_pull(task_ids='evaluate_challenger')['version'] }}?"
        ),
        body="{{ ti.xcom_pull(task_ids='evaluate_challenger')['summary'] }}",
        assigned_users=ASSIGNED,
        defaults="Reject",
        params={"comment": Param("", type="string", description="goes to the ledger")},
        response_timeout=timedelta(hours=48),
        retries=0,
    )

    @task
    def promote_model(info: XCom, **context: Any) -> XCom:
        from pipelines.orchestration.steps import RunPayload, promote_step
        from pipelines.orchestration.tasks import run_step

        # the approval is read from Airflow's HITL record of this run, not from XCom
        return run_step(promote_step, RunPayload.from_xcom(info), context["run_id"]).to_xcom()

    @task
    def notify(result: XCom) -> str:
        from pipelines.orchestration.steps import PromotionResult, notify_step
        from pipelines.orchestration.tasks import run_step

        return run_step(notify_step, PromotionResult.from_xcom(result))

    @task(retries=0, **TRAINING)  # no retry: a second try would build the same index again
    def build_search_index(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, search_index_step
        from pipelines.orchestration.tasks import run_step

        return run_step(search_index_step, RunPayload.from_xcom(info)).to_xcom()

    @task(**TRAINING)
    def train_search_ranker(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, search_ranker_step
        from pipelines.orchestration.tasks import run_step

        return run_step(search_ranker_step, RunPayload.from_xcom(info)).to_xcom()

    @task(retries=0)  # registering twice would make two versions
    def register_search_challenger(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, search_register_step
        from pipelines.orchestration.tasks import run_step

        return run_step(search_register_step, RunPayload.from_xcom(info)).to_xcom()

    @task
    def evaluate_search(info: XCom) -> XCom:
        from pipelines.orchestration.steps import RunPayload, search_evaluate_step
        from pipelines.orchestration.tasks import run_step

        return run_step(search_evaluate_step, RunPayload.from_xcom(info)).to_xcom()

    @task.short_circuit
    def search_gate(info: XCom) -> bool:
        """Not blessed: the search branch stops here; the recommender's goes on."""
        return bool(info["search_blessed"])

    await_search_review = ApprovalOperator(
        task_id="await_search_review",
        subject=(
            "Promote shopml-search version "
            "{{ ti.xcom_pull(task_ids='evaluate_search')['search_version'] }}?"
        ),
        body="{{ ti.xcom_pull(task_ids='evaluate_search')['search_summary'] }}",
        assigned_users=ASSIGNED,
        defaults="Reject",
        params={"comment": Param("", type="string", description="goes to the ledger")},
        response_timeout=timedelta(hours=48),
        retries=0,
    )

    @task
    def promote_search(info: XCom, **context: Any) -> XCom:
        from pipelines.orchestration.steps import RunPayload, search_promote_step
        from pipelines.orchestration.tasks import run_step

        return run_step(
            search_promote_step, RunPayload.from_xcom(info), context["run_id"]
        ).to_xcom()

    @task
    def notify_search(result: XCom) -> str:
        from pipelines.orchestration.steps import PromotionResult, notify_step
        from pipelines.orchestration.tasks import run_step

        return run_step(notify_step, PromotionResult.from_xcom(result))

    validated = validate_snapshot()
    evaluated = evaluate_challenger(
        register_challenger(
            train_ranker(train_candidates(materialize_features(build_features(validated))))
        )
    )
    passed = gate(evaluated)
    promoted = promote_model(evaluated)
    passed >> await_review >> promoted
    notify(promoted)

    searched = evaluate_search(
        register_search_challenger(train_search_ranker(build_search_index(validated)))
    )
    search_passed = search_gate(searched)
    search_promoted = promote_search(searched)
    search_passed >> await_search_review >> search_promoted
    notify_search(search_promoted)


shopml_retrain()
