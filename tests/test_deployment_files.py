"""The deployment files under infra/ stay true to the code: ShopML's settings, Airflow's
configuration options, one shared Airflow configuration, the workers' queues, MLflow's auth
and no literal secret. Nothing here starts a container (CI has no Docker or Kubernetes)."""

from __future__ import annotations

import configparser
import json
import re
import shlex
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from pipelines.settings import Settings, load_settings
from tests.conftest import REPO

INFRA = REPO / "infra"
COMPOSE = INFRA / "docker-compose.yaml"
HELM = INFRA / "helm" / "values.yaml"
AUTH_INI = INFRA / "mlflow-auth.ini"
DOCKERFILE = INFRA / "Dockerfile"
POSTGRES_INIT = INFRA / "postgres-init.sql"

AIRFLOW_SERVICES = (
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "worker-1",
    "worker-2",
)
WORKERS = ("worker-1", "worker-2")
# What every Airflow process must agree on (a task's token is signed by one component and
# checked by another; the workers reach the same database, broker and execution API).
SHARED = (
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
)
# What the Helm chart sets itself, from its own values (executor, config, data.*, *SecretName).
CHART_PROVIDES = {
    "AIRFLOW__CORE__EXECUTOR",
    "AIRFLOW__CORE__LOAD_EXAMPLES",
    "AIRFLOW__CORE__DAGS_FOLDER",
    "AIRFLOW__CORE__AUTH_MANAGER",
    "AIRFLOW__CORE__FERNET_KEY",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
    "AIRFLOW__CELERY__BROKER_URL",
    "AIRFLOW__CELERY__RESULT_BACKEND",
    "AIRFLOW__API_AUTH__JWT_SECRET",
    "AIRFLOW__API__SECRET_KEY",
}
# A compose variable reference: ${VAR}, ${VAR:-default}, ${VAR:?message}, ...
REF = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?+][^}]*)?\}")
SHOPML_NAME = re.compile(r"(?<![A-Za-z0-9_])SHOPML_[A-Z0-9_]+")
AIRFLOW_NAME = re.compile(r"AIRFLOW__([A-Z0-9_]+?)__([A-Z0-9_]+)")
SENSITIVE = ("PASSWORD", "SECRET", "KEY")
# user:password@ in a URI, with the references already replaced by REF_TOKEN
REF_TOKEN = "\0ref\0"
USERINFO = re.compile(r"://[^/@\s]*:([^/@\s]*)@")


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def helm() -> dict[str, Any]:
    return yaml.safe_load(HELM.read_text())


@pytest.fixture(scope="module")
def auth_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser()
    assert ini.read(AUTH_INI), f"{_rel(AUTH_INI)} cannot be read"
    return ini


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def env_of(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment as {name: value} (map or KEY=VALUE list)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def helm_env(helm: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The chart's `env` items by name, and `secret` items as {"secretKeyRef": ...}; a
    name given twice is an error."""
    items = [(str(e["name"]), dict(e)) for e in helm.get("env") or []]
    items += [
        (str(s["envName"]), {"secretKeyRef": {"name": s["secretName"], "key": s["secretKey"]}})
        for s in helm.get("secret") or []
    ]
    names = [name for name, _ in items]
    twice = sorted({n for n in names if names.count(n) > 1})
    assert not twice, f"{_rel(HELM)}: env and secret set {', '.join(twice)} more than once"
    return dict(items)


def argv(command: Any) -> list[str]:
    return [str(a) for a in command] if isinstance(command, list) else shlex.split(command)


def is_ref(value: str) -> bool:
    return REF.fullmatch(value) is not None


def literal_uri_passwords(text: str) -> list[str]:
    """The passwords written literally in the URIs of ``text`` (references and
    placeholders such as ``<password>`` are fine)."""
    found = USERINFO.findall(REF.sub(REF_TOKEN, text))
    return [p for p in found if p != REF_TOKEN and not re.fullmatch(r"<[^<>]+>", p)]


# Read by dags/shopml_retrain.py when the DAG is parsed (environment only, not settings).
DAG_PARSE_VARIABLES = {"SHOPML_MAX_ACTIVE_TASKS", "SHOPML_TRAINING_POOL"}


def setting_names() -> set[str]:
    return (
        {"SHOPML_ENV", "SHOPML_CONFIG"}
        | DAG_PARSE_VARIABLES
        | {
            f"SHOPML_{f.name.upper()}"
            for f in fields(Settings)
            if f.name not in ("env", "config_file")
        }
    )


def test_the_dag_reads_its_parse_time_variables() -> None:
    dag = (REPO / "dags" / "shopml_retrain.py").read_text()
    for name in DAG_PARSE_VARIABLES:
        assert f'os.environ.get("{name}"' in dag, f"dags/shopml_retrain.py does not read {name}"


def sensitive(name: str) -> bool:
    upper = name.upper()
    if upper.endswith("_FILE") or upper == "MLFLOW_AUTH_CONFIG_PATH":
        return False
    return any(word in upper for word in SENSITIVE)


# ---------------------------------------------------------------- (a) ShopML's settings


def test_compose_names_only_shopml_settings(compose: dict[str, Any]) -> None:
    known = setting_names()
    for name, svc in services(compose).items():
        for var, value in env_of(svc).items():
            for found in SHOPML_NAME.findall(var + " " + value):
                assert found in known, (
                    f"{_rel(COMPOSE)}: service {name}, variable {var}: {found} is not "
                    f"SHOPML_ENV, SHOPML_CONFIG, a DAG parse-time variable or SHOPML_<a field of Settings>"
                )
    for lineno, line in enumerate(COMPOSE.read_text().splitlines(), 1):
        for found in SHOPML_NAME.findall(line):
            assert found in known, f"{_rel(COMPOSE)} line {lineno}: {found} is not a ShopML setting"


def test_helm_names_only_shopml_settings(helm: dict[str, Any]) -> None:
    known = setting_names()
    for var in helm_env(helm):
        if var.startswith("SHOPML_"):
            assert var in known, (
                f"{_rel(HELM)}: env (all Airflow containers), variable {var}: not a ShopML setting"
            )
    for lineno, line in enumerate(HELM.read_text().splitlines(), 1):
        for found in SHOPML_NAME.findall(line):
            assert found in known, f"{_rel(HELM)} line {lineno}: {found} is not a ShopML setting"


def _resolved(env: dict[str, str]) -> dict[str, str]:
    """The SHOPML_* variables with each ${...} reference replaced by a sample value."""
    sample = {"SHOPML_REVIEWERS": "alice,bob"}
    return {
        k: REF.sub(sample.get(k, "sample"), v) for k, v in env.items() if k.startswith("SHOPML_")
    }


def test_compose_settings_load_in_production(compose: dict[str, Any]) -> None:
    loaded = 0
    for name, svc in services(compose).items():
        env = env_of(svc)
        if "SHOPML_ENV" not in env:
            continue
        settings = load_settings(_resolved(env), cwd=Path("/"))
        assert settings.env == "production", f"{_rel(COMPOSE)}: service {name}, SHOPML_ENV"
        assert settings.work_uri.startswith("s3://"), f"{_rel(COMPOSE)}: {name}, SHOPML_WORK_URI"
        loaded += 1
    assert loaded >= len(AIRFLOW_SERVICES) + 1  # the Airflow services and the serving API


def test_helm_settings_load_in_production(helm: dict[str, Any]) -> None:
    env = {k: str(v["value"]) for k, v in helm_env(helm).items() if "value" in v}
    settings = load_settings(_resolved(env), cwd=Path("/"))
    assert settings.env == "production", f"{_rel(HELM)}: env, SHOPML_ENV"
    assert settings.online_store == "redis", f"{_rel(HELM)}: env, SHOPML_ONLINE_STORE"


# ---------------------------------------------------------------- (b) one Airflow configuration


def test_airflow_services_share_one_configuration(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    reference = env_of(svcs["worker-1"])
    for name in AIRFLOW_SERVICES:
        assert name in svcs, f"{_rel(COMPOSE)}: no service {name}"
        env = env_of(svcs[name])
        for var in SHARED:
            assert var in env, f"{_rel(COMPOSE)}: service {name} does not set {var}"
            assert env[var] == reference[var], (
                f"{_rel(COMPOSE)}: service {name}, variable {var}: {env[var]!r} differs from "
                f"worker-1's {reference[var]!r}"
            )
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", (
            f"{_rel(COMPOSE)}: service {name}, variable AIRFLOW__CORE__EXECUTOR"
        )
        for var in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY"):
            assert is_ref(env[var]), (
                f"{_rel(COMPOSE)}: service {name}, variable {var} must be a ${{...}} reference"
            )
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith(
            "http://airflow-apiserver:8080/"
        ), f"{_rel(COMPOSE)}: service {name}, variable AIRFLOW__CORE__EXECUTION_API_SERVER_URL"
        assert svcs[name].get("image") == svcs["worker-1"].get("image"), (
            f"{_rel(COMPOSE)}: service {name} runs another image than worker-1"
        )


def test_helm_uses_celery_external_stores_and_shared_secrets(helm: dict[str, Any]) -> None:
    where = _rel(HELM)
    assert helm["executor"] == "CeleryExecutor", f"{where}: executor"
    assert helm["postgresql"]["enabled"] is False, f"{where}: postgresql.enabled"
    assert helm["redis"]["enabled"] is False, f"{where}: redis.enabled"
    for key in ("metadataSecretName", "resultBackendSecretName", "brokerUrlSecretName"):
        assert helm["data"].get(key), f"{where}: data.{key} must name a Secret"
    for key in ("jwtSecretName", "apiSecretKeySecretName", "fernetKeySecretName"):
        assert helm.get(key), f"{where}: {key} must name a Secret"
    assert str(helm["airflowVersion"]) == "3.3.2", f"{where}: airflowVersion"


def test_helm_sets_what_compose_sets(compose: dict[str, Any], helm: dict[str, Any]) -> None:
    """The workers get the same variables from the chart as from compose (the chart sets
    the database, broker and key variables itself from its own values)."""
    names = helm_env(helm)
    for worker in WORKERS:
        for var in env_of(services(compose)[worker]):
            if var in CHART_PROVIDES:
                continue
            assert var in names, (
                f"{_rel(HELM)}: env has no {var}, which {_rel(COMPOSE)} gives service {worker}"
            )
    same = (
        "SHOPML_ENV", "SHOPML_HOME", "SHOPML_SNAPSHOTS_DIR", "SHOPML_FEATURE_REGISTRY_URI",
        "SHOPML_ONLINE_STORE", "SHOPML_SERVING_BUCKET_URI", "SHOPML_WORK_URI",
        "SHOPML_MLFLOW_PROMOTER_USER", "MLFLOW_TRACKING_USERNAME",
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
    )  # fmt: skip
    worker_env = env_of(services(compose)["worker-1"])
    for var in same:
        assert str(names[var].get("value")) == worker_env[var], (
            f"{_rel(HELM)}: env {var}={names[var].get('value')!r}, but {_rel(COMPOSE)} "
            f"service worker-1 has {worker_env[var]!r}"
        )


# ---------------------------------------------------------------- (c) the workers' queues


def _queues(command: Any) -> set[str]:
    args = argv(command)
    for i, a in enumerate(args):
        if a in ("--queues", "-q") and i + 1 < len(args):
            return {q.strip() for q in args[i + 1].split(",") if q.strip()}
        if a.startswith("--queues="):
            return {q.strip() for q in a.split("=", 1)[1].split(",") if q.strip()}
    # inside `bash -c "exec airflow celery worker --queues ..."`
    for a in args:
        if "celery worker" in a:
            return _queues(a)
    return set()


def test_compose_workers_listen_to_default_and_training(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    by_worker = {w: _queues(svcs[w]["command"]) for w in WORKERS}
    for worker, queues in by_worker.items():
        args = argv(svcs[worker]["command"])
        assert args[:3] == ["airflow", "celery", "worker"], (
            f"{_rel(COMPOSE)}: service {worker}, command {args}"
        )
        assert queues, f"{_rel(COMPOSE)}: service {worker}, command: no --queues"
        assert queues <= {"default", "training"}, f"{_rel(COMPOSE)}: service {worker}: {queues}"
    assert set().union(*by_worker.values()) == {"default", "training"}, (
        f"{_rel(COMPOSE)}: services {', '.join(WORKERS)} listen to {by_worker}"
    )
    assert any("training" in q for q in by_worker.values()), (
        f"{_rel(COMPOSE)}: no worker listens to the training queue"
    )
    default_queue = env_of(svcs["worker-1"])["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
    assert all(default_queue in q for q in by_worker.values()), (
        f"{_rel(COMPOSE)}: AIRFLOW__OPERATORS__DEFAULT_QUEUE={default_queue} is not served by "
        f"every worker: {by_worker}"
    )


def test_helm_worker_sets_listen_to_default_and_training(helm: dict[str, Any]) -> None:
    sets = helm["workers"]["celery"]["sets"]
    by_set: dict[str, set[str]] = {}
    for s in sets:
        queues = {q.strip() for q in str(s["queue"]).split(",")}
        assert _queues(s["args"]) == queues, (
            f"{_rel(HELM)}: workers.celery.sets {s['name']}: args listen to "
            f"{_queues(s['args'])}, queue says {queues}"
        )
        by_set[s["name"]] = queues
    assert set().union(*by_set.values()) == {"default", "training"}, f"{_rel(HELM)}: {by_set}"
    assert any("training" in q for q in by_set.values()), f"{_rel(HELM)}: no training set"
    assert sum(int(s["replicas"]) for s in sets) == 2, f"{_rel(HELM)}: two workers in all"


# ---------------------------------------------------------------- (d) MLflow's basic auth


def test_mlflow_runs_basic_auth_with_the_ini(
    compose: dict[str, Any], auth_ini: configparser.ConfigParser
) -> None:
    svc = services(compose)["mlflow"]
    args = argv(svc["command"])
    where = f"{_rel(COMPOSE)}: service mlflow"
    assert args[:2] == ["mlflow", "server"], f"{where}, command {args}"
    assert args[args.index("--app-name") + 1] == "basic-auth", f"{where}, command --app-name"
    assert args[args.index("--artifacts-destination") + 1] == "s3://shop-mlflow/artifacts"
    assert urlparse(args[args.index("--backend-store-uri") + 1]).password is None, (
        f"{where}, command --backend-store-uri: no password in the URI (PGPASSWORD)"
    )
    env = env_of(svc)
    mounts = {
        str(v).split(":")[1]: str(v).split(":")[0] for v in svc.get("volumes", []) if ":" in str(v)
    }
    config_path = env["MLFLOW_AUTH_CONFIG_PATH"]
    assert config_path in mounts, f"{where}, variable MLFLOW_AUTH_CONFIG_PATH is not mounted"
    assert (INFRA / mounts[config_path]).resolve() == AUTH_INI, (
        f"{where}, variable MLFLOW_AUTH_CONFIG_PATH: mounted from {mounts[config_path]}"
    )
    for var in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"):
        assert is_ref(env.get(var, "")), f"{where}, variable {var}: a ${{...}} reference"

    section = auth_ini["mlflow"]
    where = _rel(AUTH_INI)
    assert section["default_permission"] == "READ", f"{where}: [mlflow] default_permission"
    assert section["admin_username"] == "admin", f"{where}: [mlflow] admin_username"
    assert section["authorization_function"] == (
        "mlflow.server.auth:authenticate_request_basic_auth"
    ), f"{where}: [mlflow] authorization_function"
    uri = urlparse(section["database_uri"])
    assert uri.scheme == "postgresql+psycopg2", f"{where}: [mlflow] database_uri"
    assert uri.password is None and "admin_password" not in section, (
        f"{where}: no password in the file"
    )
    databases = set(re.findall(r"CREATE DATABASE (\w+)", POSTGRES_INIT.read_text()))
    assert uri.path.strip("/") in databases, f"{where}: [mlflow] database_uri: no such database"


# ---------------------------------------------------------------- (e) no literal secret


def test_compose_has_no_literal_secret(compose: dict[str, Any]) -> None:
    for name, svc in services(compose).items():
        for var, value in env_of(svc).items():
            if sensitive(var):
                assert is_ref(value), (
                    f"{_rel(COMPOSE)}: service {name}, variable {var}: a ${{...}} reference, "
                    "not a literal"
                )
            assert not literal_uri_passwords(value), (
                f"{_rel(COMPOSE)}: service {name}, variable {var}: a password in a URI"
            )
        command = svc.get("command") or ""
        text = " ".join(argv(command)) if isinstance(command, list) else str(command)
        assert not literal_uri_passwords(text), (
            f"{_rel(COMPOSE)}: service {name}, command: a password in a URI"
        )
    for secret, spec in compose["secrets"].items():
        assert str(spec["file"]).startswith("./secrets/"), (
            f"{_rel(COMPOSE)}: secret {secret}: a file under infra/secrets/"
        )


def test_compose_secret_files_are_mounted_where_settings_point(compose: dict[str, Any]) -> None:
    declared = set(compose["secrets"])
    for name, svc in services(compose).items():
        mounted = set()
        for entry in svc.get("secrets", []):
            source = entry if isinstance(entry, str) else entry["source"]
            assert source in declared, f"{_rel(COMPOSE)}: service {name}, secret {source}"
            target = source if isinstance(entry, str) else entry.get("target", source)
            mounted.add(target if target.startswith("/") else f"/run/secrets/{target}")
        for var, value in env_of(svc).items():
            if var.endswith("_FILE") and value.startswith("/run/secrets/"):
                assert value in mounted, (
                    f"{_rel(COMPOSE)}: service {name}, variable {var}={value}: no such secret"
                )


def test_helm_has_no_literal_secret(helm: dict[str, Any]) -> None:
    for item in helm.get("env") or []:
        var = str(item["name"])
        if sensitive(var):
            assert "value" not in item, (
                f"{_rel(HELM)}: env, variable {var}: from a Secret (`secret:` or valueFrom)"
            )
        assert not literal_uri_passwords(str(item.get("value", ""))), (
            f"{_rel(HELM)}: env, variable {var}: a password in a URI"
        )
    for key in ("fernetKey", "apiSecretKey", "jwtSecret", "webserverSecretKey"):
        assert not helm.get(key), f"{_rel(HELM)}: {key} is a literal; use {key}SecretName"
    for key in ("metadataConnection", "resultBackendConnection"):
        assert not (helm["data"].get(key) or {}).get("pass"), f"{_rel(HELM)}: data.{key}.pass"
    assert not literal_uri_passwords(HELM.read_text()), f"{_rel(HELM)}: a password in a URI"


# ---------------------------------------------------------------- (f) Airflow's options


def _airflow_variables(compose: dict[str, Any], helm: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, variable) for every AIRFLOW__SECTION__KEY the two files set."""
    out = []
    for name, svc in services(compose).items():
        out += [(f"{_rel(COMPOSE)}: service {name}", v) for v in env_of(svc) if "__" in v]
    out += [(f"{_rel(HELM)}: env", v) for v in helm_env(helm) if "__" in v]
    return [(w, v) for w, v in out if v.startswith("AIRFLOW__")]


# Run in a fresh interpreter with its own AIRFLOW_HOME: importing Airflow reads and writes
# its home, and the test process must not keep Airflow's configuration.
_CHECK_OPTIONS = textwrap.dedent(
    """
    import json, sys
    from airflow.configuration import conf
    from airflow.providers.celery.get_provider_info import get_provider_info

    providers = get_provider_info()["config"]
    described = conf.configuration_description
    unknown = []
    for section, key in json.load(sys.stdin):
        known = (
            conf.has_option(section, key)
            or key in described.get(section, {}).get("options", {})
            or key in providers.get(section, {}).get("options", {})
        )
        if not known:
            unknown.append([section, key])
    print(json.dumps(unknown))
    """
)


def test_airflow_variables_name_real_options(
    compose: dict[str, Any], helm: dict[str, Any], tmp_path: Path
) -> None:
    found = _airflow_variables(compose, helm)
    pairs = []
    for where, var in found:
        m = AIRFLOW_NAME.fullmatch(var)
        assert m, f"{where}, variable {var}: not AIRFLOW__SECTION__KEY"
        pairs.append((m[1].lower(), m[2].lower()))
    assert ("celery", "broker_url") in pairs  # the provider's section is checked too
    env = {"AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _CHECK_OPTIONS],
        input=json.dumps(sorted(set(pairs))),
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    unknown = {tuple(p) for p in json.loads(out.stdout.strip().splitlines()[-1])}
    bad = [
        f"{where}, variable {var}"
        for (where, var), pair in zip(found, pairs, strict=True)
        if pair in unknown
    ]
    assert not bad, "not an Airflow configuration option: " + "; ".join(bad)


# ---------------------------------------------------------------- the compose file's wiring


def _healthcheck(svc: dict[str, Any]) -> str:
    test = (svc.get("healthcheck") or {}).get("test") or []
    return " ".join(test) if isinstance(test, list) else str(test)


def test_compose_healthchecks_and_dependencies(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    expected = {
        "postgres": "pg_isready",
        "redis": "redis-cli ping",
        "airflow-apiserver": "localhost:8080/api/v2/monitor/health",
        "mlflow": "localhost:5000/health",
        "shopml-serving": "localhost:8000/healthz",
    }
    for name, probe in expected.items():
        assert probe in _healthcheck(svcs[name]), f"{_rel(COMPOSE)}: service {name}, healthcheck"
    for name, svc in svcs.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            where = f"{_rel(COMPOSE)}: service {name}, depends_on {dep}"
            assert dep in svcs and dep != name, where
            condition = spec["condition"]
            if condition == "service_healthy":
                assert _healthcheck(svcs[dep]), f"{where}: {dep} has no healthcheck"
            elif condition == "service_completed_successfully":
                assert svcs[dep].get("restart") == "no", f"{where}: {dep} is not one-shot"
            else:
                assert condition == "service_started", f"{where}: condition {condition}"


def test_compose_shares_the_folders_between_workers_and_serving(compose: dict[str, Any]) -> None:
    svcs = services(compose)
    for name in (*WORKERS, "shopml-serving"):
        env = env_of(svcs[name])
        # the Feast registry every reader of the online store needs: one S3 object
        assert env["SHOPML_FEATURE_REGISTRY_URI"].startswith("s3://"), (
            f"{_rel(COMPOSE)}: service {name}, SHOPML_FEATURE_REGISTRY_URI is not on S3"
        )
        volumes = {str(v).split(":")[1]: str(v).split(":")[0] for v in svcs[name]["volumes"]}
        wanted = ["SHOPML_SNAPSHOTS_DIR"] if name in WORKERS else []
        for var in wanted:
            assert env[var] in volumes, f"{_rel(COMPOSE)}: service {name}, {var} is no volume"
            assert volumes[env[var]] in compose["volumes"], (
                f"{_rel(COMPOSE)}: service {name}, {var}: not a named (shared) volume"
            )
    for name, svc in svcs.items():
        for v in svc.get("volumes", []):
            source = str(v).split(":")[0]
            if source.startswith("."):
                assert (INFRA / source).exists(), f"{_rel(COMPOSE)}: service {name}, {source}"


def test_dockerfile_builds_the_image_from_the_lock(compose: dict[str, Any]) -> None:
    text = DOCKERFILE.read_text()
    build = services(compose)["worker-1"]["build"]
    assert (INFRA / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert re.search(r"^FROM python:3\.11-slim$", text, flags=re.M), f"{_rel(DOCKERFILE)}: FROM"
    assert "pip install --no-deps -r requirements.lock" in text, _rel(DOCKERFILE)
    assert "pip install --no-deps ." in text, _rel(DOCKERFILE)
    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = [p.rstrip("*") for p in include["packages"]["find"]["include"]]
    for folder in [*packages, "dags"]:
        assert (REPO / folder).is_dir(), folder
        assert re.search(rf"^COPY {folder}/ ", text, flags=re.M), (
            f"{_rel(DOCKERFILE)}: does not copy {folder}/"
        )
