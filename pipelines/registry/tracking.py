"""MLflow tracking: where runs go and what every run is tagged with.

One parent run per training run (tags: snapshot id, git commit, config hash, and the
Airflow dag_id/run_id when a DAG task runs it), a child run per candidate source and one
for the ranker (:mod:`pipelines.registry.challenger`).
"""

from __future__ import annotations

import logging
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from pipelines.io import sha256_json
from pipelines.settings import Settings

EXPERIMENT = "shopml-recommender"


def mlflow_module() -> Any:
    """The mlflow module, with its artifact progress bars off (they garble logs)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return mlflow


def configure(settings: Settings, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the settings' tracking store; get or create the experiment (its
    artifacts under the settings' artifact root). Returns the experiment id."""
    mlflow = mlflow_module()
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = f"{settings.mlflow_artifact_root.rstrip('/')}/{experiment}"
        exp_id = str(client.create_experiment(experiment, artifact_location=location))
    else:
        exp_id = str(exp.experiment_id)
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    """The commit of the ShopML checkout this code runs from ("unknown" outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(config: dict[str, Any]) -> str:
    return sha256_json(config)[:16]


def run_tags(snapshot_id: str, config: dict[str, Any]) -> dict[str, str]:
    tags = {
        "shopml.snapshot_id": snapshot_id,
        "shopml.git_commit": git_commit(),
        "shopml.config_hash": config_hash(config),
    }
    # Airflow exports these to every task process (AIRFLOW_CTX_*).
    for env, tag in (
        ("AIRFLOW_CTX_DAG_ID", "airflow.dag_id"),
        ("AIRFLOW_CTX_DAG_RUN_ID", "airflow.run_id"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested config dicts as ``a.b.c`` params."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Hide MLflow's notices about pickling the model and registering it."""
    loggers = [
        logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.models.model", "mlflow.store")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
