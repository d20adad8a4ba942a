"""One typed settings object for the whole platform.

Chosen once per process from the environment:

- ``SHOPML_ENV`` picks the deployment profile: ``embedded`` (default: everything local
  under one home folder, nothing to start by hand) or ``production`` (PostgreSQL-backed
  Airflow and MLflow, S3 bucket, Redis online store; every URI must be given).
- ``SHOPML_CONFIG`` optionally names a TOML file whose keys are the field names below.
- ``SHOPML_<FIELD>`` environment variables override the file (e.g. ``SHOPML_HOME``).

Nothing is read at import time; call :func:`load_settings` inside the function that
needs the values (the pattern of Dagster's ``resources_by_deployment_name``).
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import unquote, urlparse

from pipelines.errors import ConfigError
from pipelines.io import why_not_a_file

Profile = Literal["embedded", "production"]
PROFILES: tuple[Profile, ...] = ("embedded", "production")

# Settings that production cannot default, because they name shared infrastructure.
_PRODUCTION_REQUIRED = ("mlflow_tracking_uri", "serving_bucket_uri", "work_uri")


@dataclass(frozen=True)
class Settings:
    """Where ShopML keeps its state and which services it talks to.

    All local state lives under ``home`` so several isolated copies can run side by
    side (a test uses a temporary home).
    """

    env: Profile
    home: Path
    snapshots_dir: Path
    feature_store_dir: Path
    # Feast's registry (the feature definitions every reader of the online store needs):
    # "" = feature_store_dir/registry.db (embedded default; see feast_registry), a local
    # path, or s3://bucket/key (production default with an S3 serving bucket:
    # <serving_bucket_uri>/feast/registry.db), written whole on each apply, so the workers
    # and the serving API share it without a shared disk.
    feature_registry_uri: str
    airflow_home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    # Challengers are registered into "<model>-candidates" and promotion copies the approved
    # version into "<model>" (production default): the account that registers versions
    # then needs no EDIT on the served model, which is what lets it move "champion"
    # (docs/operations.md). Off (embedded default): challengers are versions of the model.
    registry_candidates: bool
    # The MLflow account promotion and rollback move "champion" with (a tracking server with
    # MLflow's basic-auth app); its password from SHOPML_MLFLOW_PROMOTER_PASSWORD or this
    # JSON file {login: password} (0600). Neither set: promotion uses the process's own
    # MLflow credentials, if any (the embedded store has none).
    mlflow_promoter_user: str
    mlflow_promoter_password_file: Path
    serving_bucket_uri: str
    # Where a retrain run's steps leave their files for the next step (file:// or s3://):
    # the payload between tasks names this, never a local folder, so a step may run on
    # any worker (pipelines/orchestration/workspace.py).
    work_uri: str
    s3_endpoint_url: str | None
    online_store: Literal["sqlite", "redis"]
    redis_url: str
    airflow_api_url: str
    # The logins that may approve a challenger (SHOPML_REVIEWERS, comma-separated): the
    # retrain DAG assigns its approval to them, and promotion accepts only their answers.
    reviewers: tuple[str, ...]
    # The read-only Airflow login the promotion step reads the approval record with; its
    # password comes from SHOPML_AIRFLOW_SERVICE_PASSWORD or this JSON file {login: password}.
    airflow_service_user: str
    airflow_service_password_file: Path
    # The key that signs evaluation verdicts (created 0600 on first use; never printed).
    signing_key_file: Path
    # Shoppers' privacy (docs/privacy.md): imports replace user ids by keyed pseudonyms
    # (production default), and the key of pseudonyms and erasure hashes (0600, created on
    # first use, never printed, never in a snapshot).
    pseudonymise: bool
    privacy_key_file: Path
    # The serving API (docs/serving.md): how often it looks for a new promoted version, its
    # API keys (a file of hashed keys, and/or SHOPML_SERVING_API_KEYS "name:scope:sha256,..."),
    # the key its request ids are signed with, where it spools events, and where the
    # recommender's user features come from ("bundle": the promoted feature snapshot, or
    # "online": the Feast online store, for fresher profiles).
    serving_poll_seconds: float
    serving_keys_file: Path
    serving_api_keys: tuple[str, ...]
    serving_secret_file: Path
    serving_events_dir: Path
    serving_feature_source: Literal["bundle", "online"]
    serving_precomputed_shoppers: int
    # `shopml stack up --profile production` on one machine (pipelines/orchestration/
    # production.py): the PostgreSQL server it creates its databases on
    # (<stack_name>_airflow, _mlflow, _mlflow_auth), the Celery broker, and where the
    # MLflow server keeps artifacts (its --artifacts-destination).
    stack_name: str
    stack_postgres_url: str
    stack_broker_url: str
    mlflow_artifacts_destination: str
    config_file: Path | None

    @property
    def feast_registry(self) -> str:
        """Where Feast's registry is: ``feature_registry_uri``, else the feature folder's."""
        return self.feature_registry_uri or str(self.feature_store_dir / "registry.db")

    def describe(self) -> dict[str, str]:
        """The settings as printable strings, for ``shopml config``: passwords inside URIs
        are shown as ``***``, key and password files by their path only."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                out[f.name] = ""
            elif isinstance(value, tuple):
                out[f.name] = ", ".join(value)
            else:
                out[f.name] = redact(str(value))
        return out


_USERINFO = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@]*):(?P<secret>[^@/]*)@"
)


def redact(uri: str) -> str:
    """``uri`` with the password of its user info replaced by ``***``
    (``redis://:s3cret@host`` -> ``redis://:***@host``); other text unchanged. Apply it
    wherever a URI is printed, logged or stored."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", uri)


def _read_config_file(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise ConfigError(f"SHOPML_CONFIG points to {path}, which is not a file")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    known = {f.name for f in fields(Settings)} - {"config_file"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{path}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return dict(data)


N = TypeVar("N", int, float)


def _bounded(
    values: Mapping[str, Any], name: str, default: N, kind: type[N], lo: N, hi: N, what: str
) -> N:
    """Setting ``name`` as a ``kind`` in [lo, hi]; a ConfigError naming it otherwise."""
    try:
        value = kind(str(values.get(name, default)))
    except ValueError:
        value = None
    if value is None or not lo <= value <= hi:
        raise ConfigError(f"{name}={values.get(name)!r}: {what}")
    return value


def load_settings(environ: Mapping[str, str] | None = None, *, cwd: Path | None = None) -> Settings:
    """Build the settings from ``environ`` (default ``os.environ``).

    Relative paths are resolved against ``cwd`` (default: the working directory), so
    ``SHOPML_HOME=.shopml`` means the same folder for every command run from one place.
    """
    env = os.environ if environ is None else environ
    base = Path.cwd() if cwd is None else cwd

    profile = env.get("SHOPML_ENV", "embedded")
    if profile not in PROFILES:
        raise ConfigError(
            f"SHOPML_ENV={profile!r} is not a profile; use one of {', '.join(PROFILES)}"
        )

    config_path = Path(env["SHOPML_CONFIG"]) if env.get("SHOPML_CONFIG") else None
    values: dict[str, object] = {}
    if config_path is not None:
        config_path = config_path if config_path.is_absolute() else base / config_path
        values.update(_read_config_file(config_path))
    for f in fields(Settings):
        key = f"SHOPML_{f.name.upper()}"
        if f.name not in ("env", "config_file") and env.get(key):
            values[f.name] = env[key]

    def path_of(name: str, default: Path) -> Path:
        raw = values.get(name)
        p = Path(str(raw)).expanduser() if raw else default
        try:
            return (p if p.is_absolute() else base / p).resolve()
        except RuntimeError as exc:  # a symlink loop
            raise ConfigError(f"SHOPML_{name.upper()}={raw}: {exc}") from exc

    home = path_of("home", base / ".shopml")
    if profile == "production":
        missing = [n for n in _PRODUCTION_REQUIRED if not values.get(n)]
        if missing:
            names = ", ".join(f"SHOPML_{n.upper()}" for n in missing)
            raise ConfigError(
                f"SHOPML_ENV=production needs {names} (in the environment or the SHOPML_CONFIG file)"
            )

    online_store = str(values.get("online_store", "redis" if profile == "production" else "sqlite"))
    if online_store not in ("sqlite", "redis"):
        raise ConfigError(f"online_store={online_store!r}: use 'sqlite' or 'redis'")

    feature_source = str(values.get("serving_feature_source", "bundle"))
    if feature_source not in ("bundle", "online"):
        raise ConfigError(f"serving_feature_source={feature_source!r}: use 'bundle' or 'online'")
    poll = _bounded(
        values, "serving_poll_seconds", 10.0, float, 0.1, 86_400, "seconds between 0.1 and 86400"
    )
    precomputed = _bounded(
        values, "serving_precomputed_shoppers", 100_000, int, 0, 10_000_000,
        "a number of shoppers between 0 (off) and 10000000",
    )  # fmt: skip

    mlflow_dir = home / "mlflow"
    airflow_home = path_of("airflow_home", home / "airflow")
    feature_store_dir = path_of("feature_store_dir", home / "feature_store")
    serving_bucket_uri = str(values.get("serving_bucket_uri", (home / "bucket").as_uri()))
    registry = str(values.get("feature_registry_uri") or "")
    parsed = urlparse(registry)
    if not registry:
        if profile == "production" and serving_bucket_uri.startswith("s3://"):
            registry = f"{serving_bucket_uri.rstrip('/')}/feast/registry.db"
    elif parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        registry = str(Path(unquote(parsed.path)))
    elif parsed.scheme == "s3" and parsed.netloc and parsed.path.strip("/"):
        pass
    elif "://" in registry:
        raise ConfigError(
            f"feature_registry_uri={registry!r}: use s3://bucket/key, file:///absolute/path "
            "or a path"
        )
    else:
        registry = str(path_of("feature_registry_uri", feature_store_dir / "registry.db"))
    return Settings(
        env=profile,  # checked against PROFILES above
        home=home,
        snapshots_dir=path_of("snapshots_dir", home / "snapshots"),
        feature_store_dir=feature_store_dir,
        feature_registry_uri=registry,
        airflow_home=airflow_home,
        mlflow_tracking_uri=str(
            values.get("mlflow_tracking_uri", f"sqlite:///{mlflow_dir / 'mlflow.db'}")
        ),
        # production: "" = the tracking server's own --artifacts-destination, proxied (what
        # its basic-auth app can authorise: <experiment id>/<run id>/artifacts/...)
        mlflow_artifact_root=str(
            values.get(
                "mlflow_artifact_root",
                "" if profile == "production" else (mlflow_dir / "artifacts").as_uri(),
            )
        ),
        registry_candidates=_flag(values, "registry_candidates", profile == "production"),
        mlflow_promoter_user=str(values.get("mlflow_promoter_user", "shopml-promoter")),
        mlflow_promoter_password_file=path_of(
            "mlflow_promoter_password_file", home / "secrets" / "mlflow-promoter.json"
        ),
        serving_bucket_uri=serving_bucket_uri,
        work_uri=_work_uri(str(values.get("work_uri") or (home / "runs").as_uri())),
        s3_endpoint_url=str(values["s3_endpoint_url"]) if values.get("s3_endpoint_url") else None,
        online_store=online_store,  # type: ignore[arg-type]  # checked above
        redis_url=str(values.get("redis_url", "redis://127.0.0.1:6379/0")),
        airflow_api_url=str(
            values.get("airflow_api_url") or _running_stack_url(airflow_home, env)
        ).rstrip("/"),
        reviewers=_names(values.get("reviewers", "reviewer")),
        airflow_service_user=str(values.get("airflow_service_user", "shopml-service")),
        airflow_service_password_file=path_of(
            "airflow_service_password_file", airflow_home / "passwords.json"
        ),
        signing_key_file=path_of("signing_key_file", home / "secrets" / "signing.key"),
        pseudonymise=_flag(values, "pseudonymise", profile == "production"),
        privacy_key_file=path_of("privacy_key_file", home / "secrets" / "privacy.key"),
        serving_poll_seconds=poll,
        serving_keys_file=path_of("serving_keys_file", home / "secrets" / "serving-keys.json"),
        serving_api_keys=_entries(values.get("serving_api_keys", "")),
        serving_secret_file=path_of("serving_secret_file", home / "secrets" / "serving.key"),
        serving_events_dir=path_of("serving_events_dir", home / "serving" / "events"),
        serving_feature_source=feature_source,  # type: ignore[arg-type]  # checked above
        serving_precomputed_shoppers=precomputed,
        stack_name=_identifier(str(values.get("stack_name", "shopml")), "stack_name"),
        stack_postgres_url=str(
            values.get("stack_postgres_url", "postgresql://postgres@127.0.0.1:5432")
        ).rstrip("/"),
        stack_broker_url=str(values.get("stack_broker_url", "redis://127.0.0.1:6379/1")),
        mlflow_artifacts_destination=str(
            values.get("mlflow_artifacts_destination", (mlflow_dir / "served-artifacts").as_uri())
        ),
        config_file=config_path,
    )


def _identifier(value: str, name: str) -> str:
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,40}", value):
        raise ConfigError(f"{name}={value!r}: lower-case letters, digits and _ (a database prefix)")
    return value


def _flag(values: Mapping[str, Any], name: str, default: bool) -> bool:
    raw = values.get(name, default)
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: use true or false")


def _work_uri(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme not in ("file", "s3") or (parsed.scheme == "s3" and not parsed.netloc):
        raise ConfigError(f"work_uri={uri!r}: use file:///absolute/folder or s3://bucket/prefix")
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise ConfigError(
            f"work_uri={uri!r}: a file:// URI names a local absolute path (file:///...)"
        )
    return uri.rstrip("/")


def _running_stack_url(airflow_home: Path, env: Mapping[str, str]) -> str:
    """Where the embedded stack of this home listens (``stack.json`` of ``make up``), else
    localhost on ``SHOPML_AIRFLOW_PORT`` (the port ``make up`` was given), else 8080."""
    try:
        url = json.loads((airflow_home / "stack.json").read_text()).get("url")
        if isinstance(url, str) and url:
            return url
    except (OSError, ValueError):
        pass
    return f"http://localhost:{env.get('SHOPML_AIRFLOW_PORT') or 8080}"


def _names(raw: object) -> tuple[str, ...]:
    """Logins from ``"a, b"`` or ``["a", "b"]``; at least one."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    names = tuple(dict.fromkeys(str(n).strip() for n in items if str(n).strip()))
    if not names:
        raise ConfigError("reviewers: name at least one Airflow login (SHOPML_REVIEWERS)")
    return names


def _entries(raw: object) -> tuple[str, ...]:
    """Comma-separated entries (or a TOML list), blanks dropped."""
    items = raw if isinstance(raw, list | tuple) else str(raw).split(",")
    return tuple(str(n).strip() for n in items if str(n).strip())


T = TypeVar("T")


# The tables of a pipeline config file (one file may hold all of them).
PIPELINE_TABLES = (
    "validation", "features", "train", "candidates", "ranker", "evaluate", "gate", "search",
    "search_gate",
)  # fmt: skip


def check_tables(path: str | Path) -> None:
    """Raise :class:`ConfigError` unless ``path`` is TOML whose tables are all known."""
    p = Path(path)
    if (why := why_not_a_file(p)) is not None:
        raise ConfigError(f"config file {p} {why}")
    try:
        known = set(tomllib.loads(p.read_text()))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    unknown = sorted(known - set(PIPELINE_TABLES))
    if unknown:
        tables = ", ".join(f"[{t}]" for t in PIPELINE_TABLES)
        raise ConfigError(f"{p}: unknown table(s) {unknown}; use {tables}")


def config_value(
    path: str | Path, section: str, key: str, default: T, types: tuple[type, ...]
) -> T:
    """One value of a ``[section]`` table (``default`` when absent), refused unless it is
    one of ``types``: for a stage that reads a single key of another stage's table."""
    p = Path(path)
    try:
        value = tomllib.loads(p.read_text()).get(section, {}).get(key, default)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the [{section}] settings: {exc}") from exc
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"{p}: [{section}] {key} = {value!r} is not a {types[0].__name__}")
    return value


def config_section(cls: type[T], path: str | Path, section: str, **overrides: Any) -> T:
    """Build the dataclass ``cls`` from the ``[section]`` table of a TOML file.

    Unknown keys are an error (a typo must not be silently ignored); ``overrides`` that
    are not None win over the file.
    """
    p = Path(path)
    try:
        data: dict[str, Any] = tomllib.loads(p.read_text()).get(section, {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the [{section}] settings: {exc}") from exc
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown [{section}] setting(s) {unknown}; known: {sorted(known)}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**data)
