"""MLflow tracking: where runs go and what every run is tagged with.

One parent run per training run (tags: snapshot id, git commit, config hash, and the
Airflow dag_id/run_id when a DAG task runs it), a child run per candidate source and one
for the ranker (:mod:`pipelines.registry.challenger`).
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow

from pipelines.errors import ShopMLError
from pipelines.io import environ, file_lock, refuse_shared, sha256_json
from pipelines.settings import Settings

log = logging.getLogger(__name__)
EXPERIMENT = "shopml-recommender"


def mlflow_module() -> Any:
    """The mlflow module, with its artifact progress bars off (they garble logs)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return mlflow


def configure(settings: Settings, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the settings' tracking store; get or create the experiment (its
    artifacts under the settings' artifact root). Returns the experiment id.

    With the embedded store (SQLite, local artifacts) this also keeps the home private
    (0700 folder, 0600 database), initialises it under a lock (two processes creating one
    database at once would both run its migrations), and re-roots artifact locations when
    ``SHOPML_HOME`` was copied or moved (:func:`_reroot`)."""
    mlflow = mlflow_module()
    uri = settings.mlflow_tracking_uri
    db = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if db is None:
        return _experiment(mlflow, settings, experiment)
    db.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with file_lock(db.parent / ".init.lock"):
        exp_id = _experiment(mlflow, settings, experiment)
        if settings.mlflow_artifact_root.startswith("file://"):
            _reroot(db, experiment, settings.mlflow_artifact_root.rstrip("/"))
        db.chmod(0o600)
    return exp_id


def experiment_location(settings: Settings, experiment: str) -> str | None:
    """Where a new experiment keeps its artifacts: under ``mlflow_artifact_root``, or the
    tracking server's default when that is empty (production: proxied artifacts)."""
    root = settings.mlflow_artifact_root.rstrip("/")
    return f"{root}/{experiment}" if root else None


def _experiment(mlflow: Any, settings: Settings, experiment: str) -> str:
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = experiment_location(settings, experiment)
        exp_id = str(client.create_experiment(experiment, artifact_location=location))
    else:
        exp_id = str(exp.experiment_id)
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


# The columns of an MLflow 3 SQLite store that hold artifact locations.
_LOCATIONS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)


def _reroot(db: Path, experiment: str, root: str) -> None:
    """Make every artifact location of the embedded store live under ``root``: a copied
    or moved ``SHOPML_HOME`` then writes and reads its own artifacts, not the original's
    (MLflow stores absolute locations). The ``Default`` experiment, which MLflow creates
    pointing at ``./mlruns`` of whatever folder it first ran in, goes under ``root`` too."""
    with sqlite3.connect(db) as con:
        row = con.execute(
            "SELECT artifact_location FROM experiments WHERE name = ?", (experiment,)
        ).fetchone()
        suffix = f"/{experiment}"
        if row is None or not str(row[0]).endswith(suffix):
            return
        old = str(row[0])[: -len(suffix)]
        con.execute(
            "UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0 "
            "AND artifact_location != ?",
            (f"{root}/0", f"{root}/0"),
        )
        if old == root:
            return
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, column in _LOCATIONS:
            if table in tables:
                con.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE substr({column}, 1, ?) = ?",
                    (root, len(old) + 1, len(old), old),
                )
        log.info("SHOPML_HOME moved: MLflow artifact locations re-rooted from %s to %s", old, root)


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


_CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def promoter_password(settings: Settings) -> str | None:
    """The promoter account's password: ``SHOPML_MLFLOW_PROMOTER_PASSWORD``, else
    ``mlflow_promoter_password_file`` (JSON ``{login: password}``, which must be 0600);
    None when neither is configured."""
    user = settings.mlflow_promoter_user
    password = os.environ.get("SHOPML_MLFLOW_PROMOTER_PASSWORD")
    path = settings.mlflow_promoter_password_file
    if not password and path.is_file():
        refuse_shared(path, "the MLflow promoter's password")
        try:
            password = json.loads(path.read_text()).get(user)
        except (OSError, ValueError, AttributeError) as exc:
            raise ShopMLError(f"cannot read the password of {user!r} from {path}: {exc}") from exc
        if not password:
            raise ShopMLError(f"{path} holds no password for the MLflow account {user!r}")
    return str(password) if password else None


@contextmanager
def as_promoter(settings: Settings) -> Iterator[str | None]:
    """MLflow calls inside the block run as the promoter account (``mlflow_promoter_user``,
    its password from :func:`promoter_password`); yields the login, or None when no promoter
    password is configured (the calls then use the process's own credentials, if any)."""
    user = settings.mlflow_promoter_user
    password = promoter_password(settings)
    if not password:
        yield None
        return
    with environ(dict(zip(_CREDENTIALS, (user, password), strict=True))):
        yield user
