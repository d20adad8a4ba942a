"""
### shopml_rollback

Serve an earlier promoted version again: re-points `current.json` in the serving bucket
and the MLflow `champion` alias, and appends a `rollback` line (with the reason and who
asked) to the ledger. Triggered by `shopml rollback --to VERSION --reason TEXT`.
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
        "reason": Param("", type="string", minLength=3, description="why (goes to the ledger)"),
        "requested_by": Param("", type="string", description="who asked"),
    },
    tags=["shopml", "rollback"],
    doc_md=__doc__,
)
def shopml_rollback() -> None:
    @task
    def rollback_model(**context: Any) -> dict[str, Any]:
        from pipelines.orchestration.steps import rollback_step

        params = context["params"]
        return rollback_step(
            version=int(params["version"]),
            reason=str(params["reason"]),
            requested_by=str(params.get("requested_by") or ""),
            dag_run_id=context["run_id"],
        )

    rollback_model()


shopml_rollback()
