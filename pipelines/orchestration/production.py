"""The production shape on one machine, against real services: ``shopml stack init|up|down|
status --profile production``.

- **Airflow** on PostgreSQL (``<stack_name>_airflow``, psycopg2) with the CeleryExecutor:
  a Redis broker (``stack_broker_url``), a PostgreSQL result backend; the API server,
  scheduler, DAG processor and triggerer, and N Celery workers. Worker ``w1`` serves the
  queue ``default``, the others ``default,training`` (the heavy steps declare ``training``
  and the pool ``shopml_training``). Each worker has a home of its own
  (``$SHOPML_HOME/workers/<name>``): steps pass files only through ``work_uri``. Every
  component gets the same JWT secret, API secret key and execution API URL.
- **MLflow**: ``mlflow server`` with the basic-auth app on PostgreSQL
  (``<stack_name>_mlflow``, ``<stack_name>_mlflow_auth``), artifacts proxied to
  ``mlflow_artifacts_destination``; the accounts of :mod:`pipelines.registry.accounts`.
  Workers log in as ``shopml-pipeline`` and promote as ``shopml-promoter``.
- **The serving API** on the serving bucket (``s3://`` in production).

``init`` creates what a first start needs and keeps what exists: the databases, the S3
buckets named by the settings, the secrets (``$SHOPML_HOME/secrets/stack.json`` and the
promoter's password file, 0600, never printed), the serving API's keys, Airflow's logins.
``up`` runs ``init``, starts every component in its own process group (recorded in
``$SHOPML_HOME/stack/stack.json``), creates the MLflow accounts once the server answers,
and waits until Airflow has parsed the DAGs. ``down`` stops them; ``status`` checks each.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from pipelines.errors import ConfigError, ShopMLError
from pipelines.io import environ, write_private
from pipelines.keys import create_secret
from pipelines.orchestration.airflow_api import AirflowClient
from pipelines.orchestration.hostname import WORKER_ENV
from pipelines.orchestration.mlflow_server import ADMIN, MlflowServer, wait_healthy
from pipelines.orchestration.stack import (
    REPO,
    SERVICE_USER,
    _passwords,
    _stop_groups,
    roles,
    stop_process_groups,
)
from pipelines.settings import Settings, redact

log = logging.getLogger(__name__)
AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
TRAINING_POOL = "shopml_training"
SECRETS = (
    "jwt_secret", "api_secret_key", "flask_secret", "mlflow_admin", "mlflow_pipeline",
    "mlflow_engineer",
)  # fmt: skip
ENGINEER = "engineer"  # the MLflow account of the stack's engineers (reads, logs runs)


@dataclass(frozen=True)
class Layout:
    """Where the stack's parts listen and keep their state, from the settings."""

    settings: Settings
    airflow_port: int
    mlflow_port: int
    serving_port: int

    @classmethod
    def of(cls, settings: Settings, serving_port: int = 8000) -> Layout:
        if settings.env != "production":
            raise ConfigError(
                "the production stack needs SHOPML_ENV=production (and its settings: "
                "infra/shopml.production.toml.example); `make up` runs the embedded one"
            )
        mlflow = urlparse(settings.mlflow_tracking_uri)
        if mlflow.scheme != "http" or mlflow.hostname not in ("127.0.0.1", "localhost"):
            raise ConfigError(
                f"mlflow_tracking_uri={settings.mlflow_tracking_uri!r}: the stack starts the "
                "MLflow server on this machine, so give http://127.0.0.1:PORT"
            )
        airflow = urlparse(settings.airflow_api_url)
        if airflow.scheme != "http" or airflow.hostname not in ("127.0.0.1", "localhost"):
            raise ConfigError(
                f"airflow_api_url={settings.airflow_api_url!r}: the stack starts Airflow on "
                "this machine, so give http://127.0.0.1:PORT"
            )
        if settings.online_store != "redis":
            raise ConfigError(
                f"online_store={settings.online_store!r}: the stack's workers and serving API "
                "share one online store, so give redis (SHOPML_ONLINE_STORE=redis)"
            )
        return cls(settings, airflow.port or 80, mlflow.port or 80, serving_port)

    @property
    def folder(self) -> Path:
        return self.settings.home / "stack"

    @property
    def state_file(self) -> Path:
        return self.folder / "stack.json"

    @property
    def secrets_file(self) -> Path:
        return self.settings.home / "secrets" / "stack.json"

    def database(self, part: str) -> str:
        return f"{self.settings.stack_name}_{part}"

    def database_url(self, part: str, driver: str = "postgresql+psycopg2") -> str:
        base = urlparse(self.settings.stack_postgres_url)
        return f"{driver}://{base.netloc}/{self.database(part)}"

    def worker_home(self, name: str) -> Path:
        return self.settings.home / "workers" / name


# ----------------------------------------------------------------------------- init


def stack_secrets(layout: Layout) -> dict[str, str]:
    """The stack's secrets, generated once (0600); the promoter's password goes to its own
    file (``mlflow_promoter_password_file``), which promotion reads."""
    path = layout.secrets_file
    known: dict[str, str] = json.loads(path.read_text()) if path.is_file() else {}
    if path.is_file() and path.stat().st_mode & 0o077:
        raise ShopMLError(f"{path} holds the stack's secrets but others may read it (chmod 600)")
    missing = [k for k in SECRETS if k not in known]
    for key in missing:
        known[key] = secrets.token_urlsafe(24)
    if missing:
        write_private(path, json.dumps(known) + "\n")
    promoter_file = layout.settings.mlflow_promoter_password_file
    user = layout.settings.mlflow_promoter_user
    if not promoter_file.is_file():
        write_private(promoter_file, json.dumps({user: secrets.token_urlsafe(24)}) + "\n")
    known["mlflow_promoter"] = str(json.loads(promoter_file.read_text())[user])
    return known


def create_databases(layout: Layout) -> list[str]:
    """The stack's PostgreSQL databases that did not exist yet (created now)."""
    import psycopg2

    base = layout.settings.stack_postgres_url
    try:
        con = psycopg2.connect(f"{base}/postgres", connect_timeout=5)
    except psycopg2.Error as exc:
        raise ShopMLError(
            f"cannot reach PostgreSQL at {redact(base)} (stack_postgres_url): "
            f"{str(exc).strip().splitlines()[0]}"
        ) from exc
    created = []
    try:
        con.autocommit = True
        with con.cursor() as cur:
            for part in ("airflow", "mlflow", "mlflow_auth"):
                name = layout.database(part)
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')  # name checked: [a-z0-9_]
                    created.append(name)
    finally:
        con.close()
    return created


def create_buckets(layout: Layout) -> list[str]:
    """The S3 buckets of the serving bucket, the work storage and MLflow's artifacts that did
    not exist yet (created now)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    s = layout.settings
    names = sorted(
        {
            urlparse(uri).netloc
            for uri in (s.serving_bucket_uri, s.work_uri, s.mlflow_artifacts_destination)
            if urlparse(uri).scheme == "s3"
        }
    )
    client = boto3.client("s3", endpoint_url=s.s3_endpoint_url)
    created = []
    for name in names:
        try:
            client.head_bucket(Bucket=name)
        except ClientError:
            client.create_bucket(Bucket=name)
            created.append(name)
        except BotoCoreError as exc:
            raise ShopMLError(f"cannot reach S3 ({s.s3_endpoint_url or 'AWS'}): {exc}") from exc
    return created


MakeKeys = Callable[[Settings], dict[str, Path]]


def init(layout: Layout, reviewers: str, make_keys: MakeKeys) -> dict[str, Any]:
    """What a first start needs (module docstring); what exists is kept. ``make_keys``
    creates the serving API's keys when it has none and returns {scope: key file}
    (``serving.keys.generate_keys``: the serving layer owns its key files)."""
    s = layout.settings
    layout.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    out: dict[str, Any] = {
        "databases": create_databases(layout),
        "buckets": create_buckets(layout),
    }
    stack_secrets(layout)
    # the key of pseudonyms and erasure hashes: imports, workers, serving and `privacy
    # forget` must share it (production pseudonymises by default)
    create_secret(s.privacy_key_file)
    s.airflow_home.mkdir(parents=True, exist_ok=True, mode=0o700)
    _passwords(s.airflow_home, list(roles(reviewers)))
    out["serving_keys"] = {k: str(v) for k, v in make_keys(s).items()}
    return out


# ----------------------------------------------------------------------------- up / down


def airflow_environment(layout: Layout, reviewers: str, keys: dict[str, str]) -> dict[str, str]:
    """What every Airflow component and worker gets (the same secrets everywhere)."""
    s = layout.settings
    home = s.airflow_home
    port = layout.airflow_port
    return {
        **_inherited(),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "pipelines.orchestration.hostname.worker_hostname",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": layout.database_url("airflow"),
        "AIRFLOW__CELERY__BROKER_URL": s.stack_broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + layout.database_url("airflow"),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": "default",
        "AIRFLOW__API_AUTH__JWT_SECRET": keys["jwt_secret"],
        "AIRFLOW__API__SECRET_KEY": keys["api_secret_key"],
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 2),
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{login}:{role}" for login, role in roles(reviewers).items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        # a worker lost mid-task is noticed in ~30 s, not 5 minutes (VERIFIED.md)
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        "SHOPML_REVIEWERS": reviewers,
        "SHOPML_MAX_ACTIVE_TASKS": "4",
        "SHOPML_TRAINING_POOL": TRAINING_POOL,
        "SHOPML_AIRFLOW_SERVICE_USER": SERVICE_USER,
        "SHOPML_AIRFLOW_SERVICE_PASSWORD_FILE": str(home / "passwords.json"),
        "SHOPML_AIRFLOW_API_URL": f"http://127.0.0.1:{port}",
    }


def worker_environment(
    layout: Layout, base: dict[str, str], name: str, index: int, keys: dict[str, str]
) -> dict[str, str]:
    """A worker's: a home of its own, the shared secrets by path, its MLflow login."""
    s = layout.settings
    return {
        **base,
        WORKER_ENV: name,
        "SHOPML_HOME": str(layout.worker_home(name)),
        "SHOPML_SNAPSHOTS_DIR": str(s.snapshots_dir),
        # Feast's registry: one for all (S3 when the bucket is), the feature folder its own
        "SHOPML_FEATURE_REGISTRY_URI": s.feast_registry,
        "SHOPML_SIGNING_KEY_FILE": str(s.signing_key_file),
        "SHOPML_PRIVACY_KEY_FILE": str(s.privacy_key_file),
        "SHOPML_MLFLOW_PROMOTER_PASSWORD_FILE": str(s.mlflow_promoter_password_file),
        "MLFLOW_TRACKING_USERNAME": "shopml-pipeline",
        "MLFLOW_TRACKING_PASSWORD": keys["mlflow_pipeline"],
        # its task-log server: the API server's port + 3, + 4, ... (+1 and +2 are the
        # scheduler's and triggerer's)
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(layout.airflow_port + 3 + index),
    }


def worker_queues(index: int, workers: int) -> str:
    """The first of several workers is the small one (``default``); the others also train.
    A single worker serves both queues (nothing would run the training steps otherwise)."""
    return "default" if index == 0 and workers > 1 else "default,training"


def _inherited() -> dict[str, str]:
    """This process's environment, less what must not leak into a long-lived child: Feast
    points PROMETHEUS_MULTIPROC_DIR at a temporary folder of the importing process, which
    is gone once this command exits (a worker importing Feast then fails)."""
    return {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}


def _spawn(layout: Layout, name: str, args: list[str], env: dict[str, str]) -> int:
    logs = layout.folder / "logs"
    logs.mkdir(parents=True, exist_ok=True, mode=0o700)
    proc = subprocess.Popen(
        args, env=env, stdout=(logs / f"{name}.log").open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True, cwd=REPO, umask=0o077,
    )  # fmt: skip
    return proc.pid


def _record(layout: Layout, pgids: dict[str, int], urls: dict[str, str]) -> None:
    write_private(layout.state_file, json.dumps({"pgids": pgids, "urls": urls}) + "\n")


def _airflow(*args: str, env: dict[str, str]) -> None:
    airflow = str(Path(sys.executable).with_name("airflow"))
    done = subprocess.run(
        [airflow, *args], env=env, capture_output=True, text=True, check=False, umask=0o077
    )
    if done.returncode != 0:
        raise ShopMLError(f"airflow {' '.join(args[:2])} failed: {done.stderr.strip()[-800:]}")


def up(
    layout: Layout,
    make_keys: MakeKeys,
    *,
    workers: int = 2,
    reviewers: str = "reviewer",
    timeout: float = 240,
) -> dict[str, Any]:
    """Start the stack (module docstring); returns its URLs and what init created."""
    from pipelines.orchestration.stack import start_serving
    from pipelines.registry.accounts import PIPELINE_USER, init_accounts

    if workers < 1:
        raise ConfigError("--workers: at least 1")
    if layout.state_file.is_file():
        raise ShopMLError(
            f"a stack of this home is running or was not stopped ({layout.state_file}); "
            "`shopml stack down` first"
        )
    s = layout.settings
    made = init(layout, reviewers, make_keys)
    keys = stack_secrets(layout)
    pgids: dict[str, int] = {}
    urls = {
        "airflow": f"http://127.0.0.1:{layout.airflow_port}",
        "mlflow": f"http://127.0.0.1:{layout.mlflow_port}",
        "serving": f"http://127.0.0.1:{layout.serving_port}",
    }
    try:
        pgids["mlflow"] = _start_mlflow(layout, keys)
        _record(layout, pgids, urls)
        base = airflow_environment(layout, reviewers, keys)
        s.airflow_home.mkdir(parents=True, exist_ok=True, mode=0o700)
        _airflow("db", "migrate", env=base)
        _airflow("pools", "set", TRAINING_POOL, str(max(1, workers - 1)), "ShopML training steps", env=base)  # fmt: skip
        airflow = str(Path(sys.executable).with_name("airflow"))
        for component in AIRFLOW_COMPONENTS:
            pgids[component] = _spawn(layout, component, [airflow, component], base)
        for i in range(workers):
            name = f"w{i + 1}"
            args = [
                airflow, "celery", "worker", "--queues", worker_queues(i, workers), "--concurrency", "1",
                "--celery-hostname", f"{name}@%h",
            ]  # fmt: skip
            pgids[f"worker-{name}"] = _spawn(
                layout, f"worker-{name}", args, worker_environment(layout, base, name, i, keys)
            )
        _record(layout, pgids, urls)
        wait_healthy(urls["mlflow"], timeout=timeout)
        admin = {
            "MLFLOW_TRACKING_USERNAME": ADMIN,
            "MLFLOW_TRACKING_PASSWORD": keys["mlflow_admin"],
        }
        with environ(admin):
            made["mlflow"] = init_accounts(
                s,
                {
                    PIPELINE_USER: keys["mlflow_pipeline"],
                    s.mlflow_promoter_user: keys["mlflow_promoter"],
                    ENGINEER: keys["mlflow_engineer"],
                },
                engineers=[ENGINEER],
            )
            made["mlflow"] = asdict(made["mlflow"])
        start_serving(s, port=layout.serving_port, timeout=timeout)
        pgids["serving"] = json.loads(serving_state(s).read_text())["pgids"]["serving"]
        serving_state(s).unlink(missing_ok=True)  # this stack's record holds it
        _record(layout, pgids, urls)
        _wait_airflow(layout, timeout)
    except BaseException:
        down(layout)
        raise
    return {"urls": urls, "init": made, "pgids": pgids}


def _start_mlflow(layout: Layout, keys: dict[str, str]) -> int:
    s = layout.settings
    server = MlflowServer(
        backend_store_uri=layout.database_url("mlflow"),
        auth_database_uri=layout.database_url("mlflow_auth"),
        artifacts_destination=s.mlflow_artifacts_destination,
        host="127.0.0.1",
        port=layout.mlflow_port,
        folder=layout.folder,
        s3_endpoint_url=s.s3_endpoint_url,
    )
    env = {
        k: v
        for k, v in server.environment(keys["mlflow_admin"], keys["flask_secret"]).items()
        if k != "PROMETHEUS_MULTIPROC_DIR"
    }
    return _spawn(layout, "mlflow", server.command(), env)


def restart_mlflow(layout: Layout, *, down_seconds: float = 0.0, timeout: float = 120) -> None:
    """Stop the stack's MLflow server (SIGTERM to its process group), wait ``down_seconds``,
    start it again and wait until it answers: an outage the running tasks must ride out."""
    state = json.loads(layout.state_file.read_text())
    stop_process_groups({"mlflow": state["pgids"]["mlflow"]})
    time.sleep(down_seconds)
    state["pgids"]["mlflow"] = _start_mlflow(layout, stack_secrets(layout))
    _record(layout, state["pgids"], state["urls"])
    wait_healthy(state["urls"]["mlflow"], timeout=timeout)


def serving_state(settings: Settings) -> Path:
    from pipelines.orchestration.stack import serving_file

    return serving_file(settings)


def _wait_airflow(layout: Layout, timeout: float) -> None:
    url = f"http://127.0.0.1:{layout.airflow_port}"
    passwords = json.loads((layout.settings.airflow_home / "passwords.json").read_text())
    admin = AirflowClient(url, "admin", passwords["admin"], timeout=5)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                ids = admin.dag_ids()
                if {"shopml_retrain", "shopml_rollback"} <= ids:
                    return
                last = f"DAGs parsed so far: {sorted(ids)}"
        except (httpx.HTTPError, ShopMLError) as exc:
            last = str(exc)
        time.sleep(2)
    raise ShopMLError(
        f"Airflow did not come up within {timeout:.0f} s ({last}); see {layout.folder / 'logs'}"
    )


def down(layout: Layout) -> list[str]:
    """Stop every component of ``stack.json`` (SIGTERM, then SIGKILL after 20 s)."""
    return _stop_groups(layout.state_file)


@dataclass(frozen=True)
class Health:
    component: str
    running: bool
    healthy: bool | None  # None: no health endpoint (the process is all there is to check)
    detail: str


# the components whose health Airflow's API server reports (their heartbeats in its database)
HEARTBEATS = {"scheduler": "scheduler", "triggerer": "triggerer", "dag-processor": "dag_processor"}


def _airflow_health(url: str) -> tuple[dict[str, Any], str]:
    """Airflow's ``/api/v2/monitor/health`` JSON ({} when it does not answer), and why not."""
    try:
        r = httpx.get(url, timeout=3)
    except httpx.HTTPError as exc:
        return {}, str(exc)
    if r.status_code != 200:
        return {}, f"HTTP {r.status_code}"
    try:
        return dict(r.json()), ""
    except (ValueError, TypeError):
        return {}, "not a JSON object"


def status(layout: Layout) -> list[Health]:
    """Each recorded component: its process group alive, and healthy by its own endpoint
    (MLflow, the serving API, Airflow's API server and metadata database) or by the
    heartbeat Airflow records for it (scheduler, triggerer, DAG processor). A Celery
    worker has neither: its process is what is checked."""
    path = layout.state_file
    if not path.is_file():
        return []
    state = json.loads(path.read_text())
    checks = {
        "mlflow": f"{state['urls']['mlflow']}/health",
        "serving": f"{state['urls']['serving']}/healthz",
    }
    airflow, why = _airflow_health(f"{state['urls']['airflow']}/api/v2/monitor/health")
    out = []
    for component, pgid in state["pgids"].items():
        try:
            os.killpg(pgid, 0)
            running = True
        except ProcessLookupError:
            running = False
        healthy: bool | None = None
        detail = "process group alive" if running else "not running"
        if running and component in checks:
            try:
                r = httpx.get(checks[component], timeout=3)
                healthy, detail = r.status_code == 200, f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                healthy, detail = False, str(exc)
        elif running and component == "api-server":
            db = airflow.get("metadatabase", {}).get("status")
            healthy = db == "healthy"
            detail = f"metadata database {db}" if airflow else why
        elif running and component in HEARTBEATS:
            report = airflow.get(HEARTBEATS[component]) or {}
            beat = report.get(f"latest_{HEARTBEATS[component]}_heartbeat")
            if report.get("status") is not None:
                healthy = report["status"] == "healthy"
                detail = f"{report['status']}, last heartbeat {beat or 'never'}"
            else:
                detail = "no heartbeat recorded yet" if airflow else f"Airflow: {why}"
        out.append(Health(component, running, healthy, detail))
    return out
