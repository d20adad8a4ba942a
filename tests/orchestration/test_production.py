"""The production stack's configuration, without starting it (tests/e2e/test_production.py
starts it): refusals, secrets, one configuration for every component, a home per worker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.errors import ConfigError, ShopMLError
from pipelines.orchestration.production import (
    Layout,
    airflow_environment,
    stack_secrets,
    worker_environment,
    worker_queues,
)
from pipelines.settings import load_settings

PRODUCTION = {
    "SHOPML_ENV": "production",
    "SHOPML_MLFLOW_TRACKING_URI": "http://127.0.0.1:5070",
    "SHOPML_AIRFLOW_API_URL": "http://127.0.0.1:8380",
    "SHOPML_SERVING_BUCKET_URI": "s3://serving/shopml",
    "SHOPML_WORK_URI": "s3://work/runs",
}


def _layout(tmp_path: Path, **extra: str) -> Layout:
    return Layout.of(load_settings({**PRODUCTION, "SHOPML_HOME": str(tmp_path), **extra}))


def test_the_stack_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs SHOPML_ENV=production"):
        Layout.of(load_settings({"SHOPML_HOME": str(tmp_path)}))
    with pytest.raises(ConfigError, match="starts the MLflow server on this machine"):
        _layout(tmp_path, SHOPML_MLFLOW_TRACKING_URI="https://mlflow.example.com")
    with pytest.raises(ConfigError, match="share one online store, so give redis"):
        _layout(tmp_path, SHOPML_ONLINE_STORE="sqlite")
    with pytest.raises(ConfigError, match="starts Airflow on this machine"):
        _layout(tmp_path, SHOPML_AIRFLOW_API_URL="http://airflow.internal:8080")
    with pytest.raises(ConfigError, match="stack_name='Shop-1'"):
        _layout(tmp_path, SHOPML_STACK_NAME="Shop-1")
    layout = _layout(tmp_path)
    assert (layout.airflow_port, layout.mlflow_port) == (8380, 5070)
    assert (
        layout.database_url("airflow")
        == "postgresql+psycopg2://postgres@127.0.0.1:5432/shopml_airflow"
    )
    res = CliRunner().invoke(app, ["stack", "status"], env={"SHOPML_HOME": str(tmp_path)})
    assert res.exit_code == 2 and "needs SHOPML_ENV=production" in res.output


def test_secrets_are_made_once_private_and_never_in_the_layout(tmp_path: Path) -> None:
    layout = _layout(tmp_path)
    first = stack_secrets(layout)
    assert stack_secrets(layout) == first  # kept
    assert layout.secrets_file.stat().st_mode & 0o777 == 0o600
    promoter = layout.settings.mlflow_promoter_password_file
    assert promoter.stat().st_mode & 0o777 == 0o600
    assert json.loads(promoter.read_text()) == {"shopml-promoter": first["mlflow_promoter"]}
    assert len(set(first.values())) == len(first)  # every secret its own
    layout.secrets_file.chmod(0o644)
    with pytest.raises(ShopMLError, match="others may read it"):
        stack_secrets(layout)


def test_every_component_shares_one_configuration_and_each_worker_has_its_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp/gone-when-this-process-exits")
    layout = _layout(tmp_path)
    keys = stack_secrets(layout)
    base = airflow_environment(layout, "alice", keys)
    assert "PROMETHEUS_MULTIPROC_DIR" not in base
    assert base["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert base["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8380/execution/"
    assert base["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg2://")
    assert base["SHOPML_TRAINING_POOL"] == "shopml_training"
    workers = [worker_environment(layout, base, f"w{i + 1}", i, keys) for i in range(2)]
    for env in workers:
        assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == keys["jwt_secret"]
        assert env["AIRFLOW__API__SECRET_KEY"] == keys["api_secret_key"]
        assert env["MLFLOW_TRACKING_USERNAME"] == "shopml-pipeline"
        assert env["SHOPML_SIGNING_KEY_FILE"] == str(layout.settings.signing_key_file)
    assert workers[0]["SHOPML_HOME"] != workers[1]["SHOPML_HOME"]
    ports = {w["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] for w in workers}
    assert len(ports) == 2 and base["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] not in ports
    assert [worker_queues(i, 3) for i in range(3)] == [
        "default",
        "default,training",
        "default,training",
    ]
    assert worker_queues(0, 1) == "default,training"  # alone, it must also train


def test_status_reads_each_components_health_and_airflows_heartbeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os
    import subprocess

    import httpx

    from pipelines.orchestration import production

    layout = _layout(tmp_path)
    gone = subprocess.Popen(["true"], start_new_session=True)
    gone.wait()
    alive = os.getpgid(0)
    layout.state_file.parent.mkdir(parents=True, exist_ok=True)
    layout.state_file.write_text(json.dumps({
        "pgids": {"api-server": alive, "scheduler": alive, "triggerer": alive,
                  "dag-processor": alive, "worker-w1": alive, "mlflow": alive, "serving": gone.pid},
        "urls": {"airflow": "http://af", "mlflow": "http://ml", "serving": "http://sv"},
    }))  # fmt: skip
    health = {
        "metadatabase": {"status": "healthy"},
        "scheduler": {"status": "unhealthy", "latest_scheduler_heartbeat": "2026-12-07T10:00:00+00:00"},
        "triggerer": {"status": None, "latest_triggerer_heartbeat": None},
        "dag_processor": {"status": "healthy", "latest_dag_processor_heartbeat": "2026-12-07T11:00:00+00:00"},
    }  # fmt: skip

    def get(url: str, **_: object) -> httpx.Response:
        if url.startswith("http://af"):
            return httpx.Response(200, json=health)
        return httpx.Response(503)

    monkeypatch.setattr(production.httpx, "get", get)
    found = {h.component: h for h in production.status(layout)}
    assert found["api-server"].healthy is True
    assert found["scheduler"].healthy is False  # its process runs, its heartbeat is stale
    assert "last heartbeat 2026-12-07T10:00:00" in found["scheduler"].detail
    assert found["triggerer"].healthy is None
    assert found["triggerer"].detail == "no heartbeat recorded yet"
    assert found["dag-processor"].healthy is True
    assert found["worker-w1"].healthy is None and found["worker-w1"].running
    assert (found["mlflow"].healthy, found["mlflow"].detail) == (False, "HTTP 503")
    assert not found["serving"].running and found["serving"].healthy is None
