"""A small client of Airflow 3's REST API for the reviewer and engineer commands.

Authenticates as a user of the configured auth manager (``POST /auth/token``) and calls
``/api/v2``: trigger a DAG run, list pending human-in-the-loop requests, answer one.
Errors a person can hit (Airflow not running, wrong password, not an assigned reviewer)
become :class:`ShopMLError` messages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import httpx

from pipelines.errors import ShopMLError

RETRAIN_DAG = "shopml_retrain"
ROLLBACK_DAG = "shopml_rollback"
REVIEW_TASK = "await_review"
SNAPSHOT_ASSET = "shopml-snapshot"


@dataclass
class AirflowClient:
    url: str
    user: str
    password: str
    timeout: float = 30.0

    def __post_init__(self) -> None:
        self._token: str | None = None
        logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.token()}"}
        try:
            r = httpx.request(
                method, f"{self.url}{path}", headers=headers, timeout=self.timeout, **kwargs
            )
        except httpx.HTTPError as exc:
            raise ShopMLError(f"cannot reach Airflow at {self.url}: {exc}") from exc
        if r.status_code == 403:
            raise ShopMLError(f"Airflow refused {self.user!r}: {_detail(r)}")
        if r.status_code == 404:
            raise ShopMLError(f"Airflow: not found: {_detail(r)}")
        if r.status_code >= 400:
            raise ShopMLError(f"Airflow answered {r.status_code} to {method} {path}: {_detail(r)}")
        return r.json() if r.content else None

    def token(self) -> str:
        if self._token is None:
            try:
                r = httpx.post(
                    f"{self.url}/auth/token",
                    json={"username": self.user, "password": self.password},
                    timeout=self.timeout,
                )
            except httpx.HTTPError as exc:
                raise ShopMLError(
                    f"cannot reach Airflow at {self.url} ({exc}); is it running (`make up`)?"
                ) from exc
            if r.status_code >= 400:
                raise ShopMLError(f"Airflow login as {self.user!r} failed: {_detail(r)}")
            self._token = str(r.json()["access_token"])
        return self._token

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        """Start a run now; returns Airflow's DAG run record (``dag_run_id``, ``state``)."""
        return dict(
            self._call(
                "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
            )
        )

    def announce_snapshot(self, snapshot: str, config: str | None = None) -> dict[str, Any]:
        """Record an event of the ``shopml-snapshot`` asset (the retrain DAG's trigger)
        with the snapshot's path (and a pipeline config file) in its extra; returns it."""
        found = self._call("GET", "/api/v2/assets", params={"name_pattern": SNAPSHOT_ASSET})
        ids = [a["id"] for a in found.get("assets", []) if a.get("name") == SNAPSHOT_ASSET]
        if not ids:
            raise ShopMLError(
                f"Airflow knows no asset {SNAPSHOT_ASSET!r}: is the shopml_retrain DAG loaded?"
            )
        return dict(
            self._call(
                "POST",
                "/api/v2/assets/events",
                json={
                    "asset_id": ids[0],
                    "extra": {"snapshot": snapshot, **({"config": config} if config else {})},
                },
            )
        )

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """Each task of the run and its state (None: not started)."""
        body = self._call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        return {t["task_id"]: t["state"] for t in body["task_instances"]}

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self._call("GET", "/api/v2/dags")["dags"]}

    def pending_reviews(self) -> list[dict[str, Any]]:
        """Open approval requests of the retrain DAG, oldest first."""
        body = self._call(
            "GET",
            f"/api/v2/dags/{RETRAIN_DAG}/dagRuns/~/hitlDetails",
            params={"response_received": "false", "order_by": "created_at"},
        )
        return [d for d in body["hitl_details"] if not d.get("response_received")]

    @staticmethod
    def review_path(run_id: str) -> str:
        return f"/api/v2/dags/{RETRAIN_DAG}/dagRuns/{run_id}/taskInstances/{REVIEW_TASK}/-1/hitlDetails"

    def answer(self, run_id: str, approve: bool, comment: str) -> dict[str, Any]:
        """Approve or reject the review of ``run_id`` as this user."""
        path = self.review_path(run_id)
        return dict(
            self._call(
                "PATCH",
                path,
                json={
                    "chosen_options": ["Approve" if approve else "Reject"],
                    "params_input": {"comment": comment},
                },
            )
        )


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)[:300]
