"""The embedded Airflow stack: scheduler, API server, DAG processor and triggerer on SQLite
with the LocalExecutor, under ``$SHOPML_HOME/airflow``, for ``make up``, ``make demo`` and
the end-to-end tests; and the serving API beside it (:func:`start_serving`).

Each component runs in its own process group (the API server outlives a killed parent
otherwise) and logs to ``$AIRFLOW_HOME/logs/<component>.log``; ``stack.json`` records the
process groups and the port so ``stop`` can end them all. Users of the simple auth
manager, each with the least role it needs (:func:`roles`): ``admin``, ``engineer``, the
reviewers (``SHOPML_REVIEWERS``) and ``shopml-service``, with passwords generated once into
``$AIRFLOW_HOME/passwords.json`` (0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipelines.errors import ShopMLError
from pipelines.io import write_private
from pipelines.orchestration.airflow_api import AirflowClient
from pipelines.settings import Settings

REPO = Path(__file__).resolve().parents[2]
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


@dataclass(frozen=True)
class Stack:
    url: str
    airflow_home: Path
    passwords: dict[str, str]
    pgids: dict[str, int]


SERVICE_USER = "shopml-service"
_ORDER = ("viewer", "user", "op", "admin")


def roles(reviewers: str) -> dict[str, str]:
    """Each login of the embedded stack and the least role of Airflow's simple auth manager
    it needs: ``admin`` administers; ``engineer`` triggers runs and announces snapshots
    (asset events need ``op``) and reads everything; each reviewer answers approval
    requests (``user``: HITL answers need DAG edit rights; Airflow lets only the assigned
    logins answer); ``shopml-service`` is the read-only login ShopML's tasks read the
    approval records with. A login named twice keeps the higher role."""
    wanted = [("admin", "admin"), ("engineer", "op"), (SERVICE_USER, "viewer")]
    wanted += [(r.strip(), "user") for r in reviewers.split(",") if r.strip()]
    out: dict[str, str] = {}
    for login, role in wanted:
        current = out.get(login)
        if current is None or _ORDER.index(role) > _ORDER.index(current):
            out[login] = role
    return out


def users(reviewers: str) -> list[str]:
    return list(roles(reviewers))


def environment(settings: Settings, port: int, reviewers: str = "reviewer") -> dict[str, str]:
    """The environment every Airflow component and task gets."""
    home = settings.airflow_home
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        # a writer waits up to a minute for the others (sqlite3's own limit is 5 s)
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": "pipelines.orchestration.sqlite_db.SYNC",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS_ASYNC": "pipelines.orchestration.sqlite_db.ASYNC",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        # the task-log server of the scheduler; its default 8793 would clash between stacks
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(port + 1),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(port + 2),
        "AIRFLOW__API__BASE_URL": f"http://localhost:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{login}:{role}" for login, role in roles(reviewers).items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "SHOPML_HOME": str(settings.home),
        "SHOPML_REVIEWERS": reviewers,
        "SHOPML_AIRFLOW_SERVICE_USER": SERVICE_USER,
        "SHOPML_AIRFLOW_SERVICE_PASSWORD_FILE": str(home / "passwords.json"),
        "SHOPML_AIRFLOW_API_URL": f"http://localhost:{port}",
        # macOS: LocalExecutor workers fork; keep Objective-C runtime quiet
        "OBJC_DISABLE_INITIALIZE_FORK_SAFETY": "YES",
    }


def _passwords(home: Path, logins: list[str]) -> dict[str, str]:
    """The logins' passwords, generated once into ``passwords.json`` (mode 0600 from the
    moment it exists: written to a temporary file created 0600, then renamed)."""
    path = home / "passwords.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    for login in logins:
        known.setdefault(login, secrets.token_urlsafe(16))
    write_private(path, json.dumps(known) + "\n")
    return dict(known)


def _airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def start(
    settings: Settings,
    *,
    port: int = 8080,
    reviewers: str = "reviewer",
    timeout: float = 180,
) -> Stack:
    """Migrate the database, start the four components, wait until the API is healthy
    and both DAGs are parsed."""
    home = settings.airflow_home
    (home / "logs").mkdir(parents=True, exist_ok=True, mode=0o700)
    home.chmod(0o700)
    env = environment(settings, port, reviewers)
    passwords = _passwords(home, users(reviewers))
    # umask 077: Airflow's database, logs and files are readable by their owner only
    migrate = subprocess.run(
        [_airflow_bin(), "db", "migrate"],
        env=env, capture_output=True, text=True, check=False, umask=0o077,
    )  # fmt: skip
    if migrate.returncode != 0:
        raise ShopMLError(f"airflow db migrate failed: {migrate.stderr.strip()[-800:]}")
    pgids: dict[str, int] = {}
    for component in COMPONENTS:
        args = [_airflow_bin(), component] + (
            ["--port", str(port)] if component == "api-server" else []
        )
        log = (home / "logs" / f"{component}.log").open("ab")
        proc = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=REPO, umask=0o077,
        )  # fmt: skip
        pgids[component] = proc.pid
    url = f"http://localhost:{port}"
    (home / "stack.json").write_text(json.dumps({"url": url, "pgids": pgids}) + "\n")
    stack = Stack(url, home, passwords, pgids)
    try:
        _wait_ready(stack, timeout)
    except BaseException:
        stop(settings)
        raise
    return stack


def _wait_ready(stack: Stack, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    admin = AirflowClient(stack.url, "admin", stack.passwords["admin"], timeout=5)
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{stack.url}/api/v2/monitor/health", timeout=5).status_code == 200:
                ids = admin.dag_ids()
                if {"shopml_retrain", "shopml_rollback"} <= ids:
                    return
                last = f"DAGs parsed so far: {sorted(ids)}"
        except (httpx.HTTPError, ShopMLError) as exc:
            last = str(exc)
        time.sleep(2)
    raise ShopMLError(
        f"Airflow did not come up within {timeout:.0f} s ({last}); see {stack.airflow_home / 'logs'}"
    )


def stop(settings: Settings) -> list[str]:
    """End every process group of ``stack.json`` and the serving API's ``serving.json``;
    returns the components stopped."""
    stopped = _stop_groups(settings.airflow_home / "stack.json")
    return stopped + _stop_groups(serving_file(settings))


def stop_process_groups(pgids: dict[str, int], grace: float = 20) -> list[str]:
    """SIGTERM each process group, SIGKILL those still alive after ``grace`` seconds;
    returns the names of the groups that were running."""
    stopped = []
    for component, pgid in pgids.items():
        try:
            os.killpg(pgid, signal.SIGTERM)
            stopped.append(component)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + grace
    for pgid in pgids.values():
        while time.monotonic() < deadline:
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
    return stopped


def _stop_groups(path: Path) -> list[str]:
    if not path.is_file():
        return []
    pgids: dict[str, int] = json.loads(path.read_text())["pgids"]
    stopped = stop_process_groups(pgids)
    path.unlink(missing_ok=True)
    return stopped


# ----------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class Serving:
    url: str
    client_key_file: Path
    admin_key_file: Path
    log: Path

    def key(self, scope: str = "client") -> str:
        path = self.client_key_file if scope == "client" else self.admin_key_file
        return path.read_text().strip()


def serving_file(settings: Settings) -> Path:
    return settings.home / "serving" / "serving.json"


def start_serving(
    settings: Settings, *, port: int = 8000, poll_seconds: float | None = None, timeout: float = 60
) -> Serving:
    """``shopml serve`` in its own process group (recorded in ``serving.json`` so
    :func:`stop` ends it), once it answers ``/healthz``; it loads the promoted models in
    the background (``/readyz``). The embedded profile's keys are created on its first
    start, in the folder of ``serving_keys_file``."""
    folder = settings.home / "serving"
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "SHOPML_HOME": str(settings.home),
        "SHOPML_SERVING_BUCKET_URI": settings.serving_bucket_uri,
        "SHOPML_SERVING_KEYS_FILE": str(settings.serving_keys_file),
        "SHOPML_SERVING_SECRET_FILE": str(settings.serving_secret_file),
        "SHOPML_SERVING_EVENTS_DIR": str(settings.serving_events_dir),
    }
    if poll_seconds is not None:
        env["SHOPML_SERVING_POLL_SECONDS"] = str(poll_seconds)
    log = folder / "serve.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port)],
        env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        cwd=REPO, umask=0o077,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    serving_file(settings).write_text(json.dumps({"url": url, "pgids": {"serving": proc.pid}}))
    keys = settings.serving_keys_file.parent
    serving = Serving(url, keys / "serving-client.key", keys / "serving-admin.key", log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _stop_groups(serving_file(settings))
            raise ShopMLError(f"the serving API exited at start; see {log}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return serving
        time.sleep(0.3)
    _stop_groups(serving_file(settings))
    raise ShopMLError(f"the serving API did not answer within {timeout:.0f} s; see {log}")
