"""A small client of Airflow 3's REST API for the reviewer and engineer commands.

Authenticates as a user of the configured auth manager (``POST /auth/token``) and calls
``/api/v2``: trigger a DAG run, list pending human-in-the-loop requests, answer one.
Errors a person can hit (Airflow not running, wrong password, not an assigned reviewer)
become :class:`ShopMLError` messages.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import httpx

from pipelines.errors import ServiceUnavailableError, ShopMLError
from pipelines.promotion.promote import Review
from pipelines.settings import Settings

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
            raise ServiceUnavailableError(f"cannot reach Airflow at {self.url}: {exc}") from exc
        if r.status_code == 403:
            raise ShopMLError(f"Airflow refused {self.user!r}: {_detail(r)}")
        if r.status_code == 404:
            raise ShopMLError(f"Airflow: not found: {_detail(r)}")
        if r.status_code >= 500:
            raise ServiceUnavailableError(
                f"Airflow answered {r.status_code} to {method} {path}: {_detail(r)}"
            )
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
                raise ServiceUnavailableError(
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
    def review_path(run_id: str, dag_id: str = RETRAIN_DAG, task_id: str = REVIEW_TASK) -> str:
        return f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails"

    def review(self, run_id: str, dag_id: str = RETRAIN_DAG, task_id: str = REVIEW_TASK) -> Review:
        """Airflow's record of the approval request of one DAG run: who it was assigned to,
        whether and how it was answered, by whom and when."""
        detail = self._call("GET", self.review_path(run_id, dag_id, task_id))
        return review_from_hitl(detail, dag_id=dag_id, run_id=run_id, task_id=task_id)

    def answer(
        self, run_id: str, approve: bool, comment: str, task_id: str = REVIEW_TASK
    ) -> dict[str, Any]:
        """Approve or reject the review ``task_id`` of ``run_id`` as this user."""
        path = self.review_path(run_id, task_id=task_id)
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


def review_from_hitl(detail: Any, *, dag_id: str, run_id: str, task_id: str) -> Review:
    """A HITL detail as Airflow's REST API returns it, as a :class:`Review`; refused unless
    it is the record of ``task_id`` in ``run_id`` of ``dag_id``."""
    if not isinstance(detail, dict):
        raise ShopMLError(f"Airflow returned no approval record for {dag_id} run {run_id}")
    ti = detail.get("task_instance") or {}
    found = (ti.get("dag_id"), ti.get("dag_run_id"), ti.get("task_id"))
    if found != (dag_id, run_id, task_id):
        raise ShopMLError(
            f"Airflow's approval record is for {found}, not {(dag_id, run_id, task_id)}"
        )
    responder = detail.get("responded_by_user") or {}
    params = detail.get("params_input") or {}
    return Review(
        dag_id=dag_id,
        dag_run=run_id,
        task_id=task_id,
        response_received=bool(detail.get("response_received")),
        chosen_options=tuple(str(o) for o in detail.get("chosen_options") or ()),
        responded_by=str(responder["id"])
        if isinstance(responder, dict) and responder.get("id")
        else None,
        responded_at=str(detail["responded_at"]) if detail.get("responded_at") else None,
        assigned=tuple(
            str(u.get("id")) for u in detail.get("assigned_users") or () if isinstance(u, dict)
        ),
        comment=str(params.get("comment") or "") if isinstance(params, dict) else "",
    )


def service_client(settings: Settings) -> AirflowClient:
    """The read-only login ShopML's own tasks read Airflow with (``settings.airflow_service_user``;
    its password from ``SHOPML_AIRFLOW_SERVICE_PASSWORD`` or the password file)."""
    user = settings.airflow_service_user
    password = os.environ.get("SHOPML_AIRFLOW_SERVICE_PASSWORD")
    if not password:
        path = settings.airflow_service_password_file
        try:
            password = json.loads(path.read_text()).get(user)
        except (OSError, ValueError) as exc:
            raise ShopMLError(f"cannot read the password of {user!r} from {path}: {exc}") from exc
        if not password:
            raise ShopMLError(f"{path} holds no password for the Airflow login {user!r}")
    return AirflowClient(settings.airflow_api_url, user, str(password))


def _detail(r: httpx.Response) -> str:
    try:
        body = r.json()
    except ValueError:
        return r.text[:300]
    return str(body.get("detail", body)) if isinstance(body, dict) else str(body)[:300]
