"""`shopml stack accounts` against a real MLflow tracking server run with the basic-auth app
(SQLite stores, the way a server ShopML did not start is set up): accounts, models and
grants created as the admin, engineers' passwords generated into the 0600 file, never
printed; an engineer logs runs but cannot move `champion`; careless input refused."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.io import environ
from pipelines.orchestration.mlflow_server import MlflowServer, wait_healthy

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # starts an MLflow server
runner = CliRunner()
ADMIN_PASSWORD = "admin-password-for-tests"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    spec = MlflowServer(
        backend_store_uri=f"sqlite:///{folder / 'mlflow.db'}",
        auth_database_uri=f"sqlite:///{folder / 'auth.db'}",
        artifacts_destination=(folder / "artifacts").as_uri(),
        host="127.0.0.1",
        port=port,
        folder=folder,
    )
    with (folder / "server.log").open("w") as log:
        proc = subprocess.Popen(
            spec.command(),
            env=spec.environment(ADMIN_PASSWORD, "flask-secret-for-tests"),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_healthy(spec.url, timeout=120)
        yield spec.url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def _accounts(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["stack", "accounts", *args], env={**env, "COLUMNS": "400"})
    return result.exit_code, " ".join(result.output.split())


def test_accounts_on_a_server_shopml_did_not_start(server: str, tmp_path: Path) -> None:
    promoter = tmp_path / "promoter.json"
    promoter.write_text(json.dumps({"shopml-promoter": "promoter-password-1"}))
    promoter.chmod(0o600)
    passwords = tmp_path / "mlflow-passwords.json"
    passwords.write_text(json.dumps({"shopml-pipeline": "pipeline-password-1"}))
    passwords.chmod(0o644)
    env = {
        "SHOPML_MLFLOW_TRACKING_URI": server,
        "SHOPML_MLFLOW_PROMOTER_PASSWORD_FILE": str(promoter),
        "SHOPML_REGISTRY_CANDIDATES": "true",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
    }
    code, out = _accounts(env, "--passwords", str(passwords), "--engineer", "erin")
    assert code == 2 and "mode 644; only its owner may read it (chmod 600" in out, out
    passwords.chmod(0o600)
    code, out = _accounts(
        {**env, "MLFLOW_TRACKING_PASSWORD": ""}, "--passwords", str(passwords), "--engineer", "erin"
    )
    assert code == 2 and "run as MLflow's admin" in out, out
    code, out = _accounts(env, "--passwords", str(passwords), "--engineer", "shopml-promoter")
    assert code == 2 and "shopml-promoter: not an engineer's login" in out, out
    before = passwords.read_text()
    code, out = _accounts(
        {**env, "SHOPML_MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"},
        "--passwords", str(passwords), "--engineer", "erin",
    )  # fmt: skip
    assert code == 2 and "need a tracking server" in out, out
    assert passwords.read_text() == before  # refused before anything was written

    code, out = _accounts(env, "--passwords", str(passwords), "--engineer", "erin")
    assert code == 0, out
    assert "accounts created: shopml-pipeline, erin, shopml-promoter" in out
    assert "models created: shopml-recommender, shopml-recommender-candidates" in out
    assert f"passwords of erin written to {passwords} (0600)" in out
    known = json.loads(passwords.read_text())
    assert passwords.stat().st_mode & 0o777 == 0o600
    assert set(known) == {"shopml-pipeline", "erin"} and len(known["erin"]) >= 16
    for secret in (*known.values(), "promoter-password-1", ADMIN_PASSWORD):
        assert secret not in out

    code, out = _accounts(env, "--passwords", str(passwords), "--engineer", "erin")
    assert code == 0 and "accounts created: none (all exist)" in out, out
    assert json.loads(passwords.read_text()) == known  # an existing password is kept

    with environ({"MLFLOW_TRACKING_USERNAME": "erin", "MLFLOW_TRACKING_PASSWORD": known["erin"]}):
        erin = MlflowClient(server, server)
        experiment = erin.get_experiment_by_name("shopml-recommender")
        assert experiment is not None  # engineers log runs...
        # ...into the server's artifact store, not a folder of the host that ran the command
        assert experiment.artifact_location.startswith("mlflow-artifacts:"), experiment
        erin.log_metric(erin.create_run(experiment.experiment_id).info.run_id, "ndcg_at_10", 0.1)
        with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403"):
            erin.create_model_version("shopml-recommender", "runs:/x/model")
        with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403"):
            erin.set_registered_model_alias("shopml-recommender", "champion", "1")
    with environ({"MLFLOW_TRACKING_USERNAME": "shopml-promoter", "MLFLOW_TRACKING_PASSWORD": "promoter-password-1"}):  # fmt: skip
        assert MlflowClient(server, server).get_registered_model("shopml-recommender")
    # an engineer the server knows already keeps its password: the file is not given one
    passwords.write_text(json.dumps({"shopml-pipeline": known["shopml-pipeline"]}))
    code, out = _accounts(env, "--passwords", str(passwords), "--engineer", "erin")
    assert code == 0 and "passwords of" not in out, out
    assert json.loads(passwords.read_text()) == {"shopml-pipeline": known["shopml-pipeline"]}
    # an engineer cannot run it (only the admin grants)
    code, out = _accounts(
        {**env, "MLFLOW_TRACKING_USERNAME": "erin", "MLFLOW_TRACKING_PASSWORD": known["erin"]},
        "--passwords", str(passwords),
    )  # fmt: skip
    assert code == 2 and f"MLflow at {server}" in out, out
