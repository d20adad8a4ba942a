"""A real MLflow tracking server with MLflow's basic-auth app: challengers go to the
candidates model as the pipeline's account, only the promoter account copies an approved
one into the served model and moves ``champion``; an engineer's account (or the
pipeline's) trying to move it gets 403 and the alias stays where it was."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.errors import ShopMLError
from pipelines.evaluation.evaluate import evaluate
from pipelines.orchestration.mlflow_server import MlflowServer, wait_healthy
from pipelines.promotion.promote import ledger_entries, promote
from pipelines.registry.accounts import PIPELINE_USER, init_accounts
from pipelines.registry.models import MODEL_NAME
from pipelines.settings import Settings, load_settings
from tests.promotion.test_promote import review
from tests.served import PERMISSIVE
from tests.shops import TrainedShop, in_dag_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ADMIN_PASSWORD = "admin-password-for-tests"
PASSWORDS = {
    PIPELINE_USER: "pipeline-pass-1",
    "shopml-promoter": "promoter-pass-1",
    "erin": "engineer-pass-1",
}
CANDIDATES = f"{MODEL_NAME}-candidates"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


URL = {"tracking": ""}  # the server of the running test


@contextmanager
def account(user: str, password: str) -> Iterator[MlflowClient]:
    """MLflow calls inside run as ``user`` (how a process picks its MLflow login)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update({"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": password})
    try:
        yield MlflowClient(tracking_uri=URL["tracking"], registry_uri=URL["tracking"])
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    folder = tmp_path / "mlflow-server"
    folder.mkdir()
    srv = MlflowServer(
        backend_store_uri=f"sqlite:///{folder / 'mlflow.db'}",
        auth_database_uri=f"sqlite:///{folder / 'auth.db'}",
        artifacts_destination=(folder / "artifacts").as_uri(),
        host="127.0.0.1",
        port=_port(),
        folder=folder,
    )
    log = (folder / "server.log").open("w")
    proc = subprocess.Popen(
        srv.command(), env=srv.environment(ADMIN_PASSWORD, "flask-secret-for-tests"),
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        wait_healthy(srv.url, timeout=180)
        URL["tracking"] = srv.url
        yield srv
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()


def _settings(tmp_path: Path, url: str) -> Settings:
    base = load_settings(
        {
            "SHOPML_ENV": "production",  # candidates registry, artifacts proxied by the server
            "SHOPML_HOME": str(tmp_path / "home"),
            "SHOPML_MLFLOW_TRACKING_URI": url,
            "SHOPML_SERVING_BUCKET_URI": (tmp_path / "bucket").as_uri(),
            "SHOPML_WORK_URI": (tmp_path / "work").as_uri(),
            "SHOPML_MLFLOW_PROMOTER_PASSWORD_FILE": str(tmp_path / "promoter.json"),
        }
    )
    assert base.registry_candidates and base.mlflow_artifact_root == ""
    return replace(base, reviewers=("reviewer", "alice"))


def test_only_the_promoter_account_moves_champion(
    tmp_path: Path, server: MlflowServer, trained_shop: TrainedShop
) -> None:
    settings = _settings(tmp_path, server.url)
    assert (
        httpx.get(f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1").status_code
        == 401
    )
    with account("admin", ADMIN_PASSWORD):
        grants = init_accounts(settings, PASSWORDS, engineers=["erin"])
        assert sorted(grants.users_created) == sorted(PASSWORDS)
        assert set(grants.models_created) == {
            MODEL_NAME,
            CANDIDATES,
            "shopml-search",
            "shopml-search-candidates",
        }
        again = init_accounts(settings, PASSWORDS, engineers=["erin"])  # a rerun keeps all
        assert again.users_created == again.models_created == []

    # the pipeline registers and evaluates a challenger: a version of the candidates model
    with account(PIPELINE_USER, PASSWORDS[PIPELINE_USER]):
        out = trained_shop.register(settings)
        assert out.uri == f"models:/{CANDIDATES}/1"
        with in_dag_run("run-1"):
            evaluate(model_uri=out.uri, snapshot_uri=trained_shop.snapshot, settings=settings, cfg=PERMISSIVE, use_champion=False)  # fmt: skip
        # without the promoter's password the pipeline's own account is refused the copy
        with pytest.raises(ShopMLError, match="MLflow refused shopml-pipeline the registry write"):
            promote(version=1, settings=settings, review=review("run-1"))

    secret = tmp_path / "promoter.json"
    secret.write_text(json.dumps({"shopml-promoter": PASSWORDS["shopml-promoter"]}))
    secret.chmod(0o644)
    with pytest.raises(ShopMLError, match="is mode 644; only its owner may read it"):
        promote(version=1, settings=settings, review=review("run-1"))
    secret.chmod(0o600)
    with account(PIPELINE_USER, PASSWORDS[PIPELINE_USER]):  # the task's own login
        outcome = promote(version=1, settings=settings, review=review("run-1"))
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == PIPELINE_USER  # restored after
        assert outcome.changed and outcome.version == 1
        again = promote(version=1, settings=settings, review=review("run-1"))  # a retry
        assert not again.changed and again.version == 1

    with account("erin", PASSWORDS["erin"]) as erin:
        champion = erin.get_model_version_by_alias(MODEL_NAME, "champion")  # READ: allowed
        assert (champion.version, champion.source) == ("1", f"models:/{CANDIDATES}/1")
        assert len(erin.search_model_versions(f"name = '{MODEL_NAME}'")) == 1  # one copy
    (entry,) = ledger_entries(settings, MODEL_NAME)
    assert (entry["version"], entry["source"]) == (1, f"{CANDIDATES}/1")

    # a second challenger; neither an engineer nor the pipeline can serve it by hand
    with account(PIPELINE_USER, PASSWORDS[PIPELINE_USER]):
        assert trained_shop.register(settings, weak=True).version == 2
    for user in ("erin", PIPELINE_USER):
        with account(user, PASSWORDS[user]) as client:
            for attempt in (
                lambda c=client: c.set_registered_model_alias(MODEL_NAME, "champion", "1"),
                lambda c=client: c.delete_registered_model_alias(MODEL_NAME, "champion"),
                lambda c=client: c.copy_model_version(f"models:/{CANDIDATES}/2", MODEL_NAME),
            ):
                with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403"):
                    attempt()
    with account("erin", PASSWORDS["erin"]) as erin:
        assert erin.get_model_version_by_alias(MODEL_NAME, "champion").version == "1"
        assert len(erin.search_model_versions(f"name = '{MODEL_NAME}'")) == 1
        # engineers log runs in ShopML's experiments
        exp = erin.get_experiment_by_name("shopml-recommender")
        assert exp is not None
        run = erin.create_run(exp.experiment_id)
        erin.log_metric(run.info.run_id, "ndcg_at_10", 0.1)
