"""
### shopml_rollback

Serve an earlier promoted version of `shopml-recommender` or `shopml-search` again: appends a `rollback` entry to the ledger (the
reason, and who asked: the login that triggered this run, as Airflow authenticated it),
re-points `current.json` in the serving bucket and the MLflow `champion` alias. Triggered
by `shopml rollback --to VERSION --reason TEXT [--model shopml-search]`.
See docs/operations.md.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task


@dag(
    dag_id="shopml_rollback",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "shopml", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params={
        "version": Param(1, type="integer", minimum=1, description="version to serve again"),
        "model": Param(
            "shopml-recommender",
            type="string",
            enum=["shopml-recommender", "shopml-search"],
            description="which served model",
        ),
        "reason": Param("", type="string", minLength=3, description="why (goes to the ledger)"),
    },
    tags=["shopml", "rollback"],
    doc_md=__doc__,
)
def shopml_rollback() -> None:
    @task
    def rollback_model(**context: Any) -> dict[str, Any]:
        from pipelines.orchestration.steps import rollback_step
        from pipelines.orchestration.tasks import run_step

        params = context["params"]
        return run_step(
            rollback_step,
            version=int(params["version"]),
            model=str(params.get("model") or "shopml-recommender"),
            reason=str(params["reason"]),
            # who asked: Airflow's authenticated triggering user, not a parameter
            requested_by=context["dag_run"].triggering_user_name,
            dag_run_id=context["run_id"],
        )

    rollback_model()


shopml_rollback()
