"""The Feast store: configuration from settings, online serving, and training frames.

The store's configuration is built from ShopML settings (no ``feature_store.yaml``):
the parquet sources under ``settings.feature_store_dir``, the registry at
``settings.feature_registry_uri`` (a local file embedded, an S3 object in production, so
workers and the serving API share it without a shared disk), the online store SQLite
(embedded) or Redis (production).

:func:`get_training_frame` joins features to labels point-in-time: each label row at
time t gets, per feature view, the latest feature row with timestamp <= t, exactly as
Feast's ``get_historical_features`` does. It is a ``pandas.merge_asof`` over the same
parquet files because Feast's file offline store, on this data, drops labels that
precede an entity's first row, merges labels sharing (entity, time), and took 20
minutes for 200k labels (the join here takes seconds); a test checks both give the same
rows where Feast's output is complete.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store import definitions
from pipelines.errors import ConfigError, ShopMLError
from pipelines.settings import Settings, load_settings, redact

log = logging.getLogger(__name__)
PROJECT = "shopml"
VIEWS = {fv.name: fv for fv in definitions.FEATURE_VIEWS}
_ENTITY_KEYS = {e.name: e.join_key for e in definitions.ENTITIES}


def join_key(view: str) -> str:
    """The entity column a feature view is keyed by (``user_id`` or ``item_id``)."""
    return str(_ENTITY_KEYS[VIEWS[view].entities[0]])


SERVICES = {fs.name: fs for fs in definitions.FEATURE_SERVICES}


def _redis_connection_string(url: str) -> str:
    """``redis://host:port/db`` (settings) to Feast's ``host:port,db=N[,password=...]``."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss") or not parsed.hostname:
        raise ConfigError(f"redis_url {redact(url)!r}: use redis://host:port/db")
    parts = [
        f"{parsed.hostname}:{parsed.port or 6379}",
        f"db={(parsed.path or '/0').lstrip('/') or '0'}",
    ]
    if parsed.password:
        parts.append(f"password={parsed.password}")
    if parsed.scheme == "rediss":
        parts.append("ssl=true")
    return ",".join(parts)


def store_config(settings: Settings, *, project: str = PROJECT) -> Any:
    from feast.infra.offline_stores.dask import DaskOfflineStoreConfig
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig
    from feast.infra.online_stores.sqlite import SqliteOnlineStoreConfig
    from feast.repo_config import RegistryConfig, RepoConfig

    root = settings.feature_store_dir
    registry = settings.feast_registry
    shared = registry.startswith("s3://")
    if shared and settings.s3_endpoint_url:
        # Feast's S3 registry reads its endpoint from the environment only
        os.environ["FEAST_S3_ENDPOINT_URL"] = settings.s3_endpoint_url
    online: Any
    if settings.online_store == "redis":
        online = RedisOnlineStoreConfig(
            connection_string=_redis_connection_string(settings.redis_url)
        )
    else:
        online = SqliteOnlineStoreConfig(path=str(root / "online.db"))
    return RepoConfig(
        project=project,
        provider="local",
        # A local registry is read once per process (definitions change through `apply` in
        # this process); a shared one again after a minute, so a long-lived reader (the
        # serving API) sees what a worker applied since.
        registry=RegistryConfig(path=registry, cache_ttl_seconds=60 if shared else 0),
        online_store=online,
        offline_store=DaskOfflineStoreConfig(),
        entity_key_serialization_version=3,
        repo_path=root,
    )


def registry_missing(settings: Settings) -> str | None:
    """Why Feast's registry cannot be read (None when it can): absent, or its S3 object
    not readable. Feast itself writes an empty registry wherever it cannot read one
    (even on an S3 error), which must not happen to the shared one on a reader's open."""
    where = settings.feast_registry
    if not where.startswith("s3://"):
        return None if Path(where).is_file() else f"no feature registry at {where}"
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    parsed = urlparse(where)
    try:
        boto3.client("s3", endpoint_url=settings.s3_endpoint_url).head_object(
            Bucket=parsed.netloc, Key=parsed.path.lstrip("/")
        )
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchKey", "NotFound"):
            return f"no feature registry at {where}"
        return f"cannot read the feature registry at {where} (S3 answered {code})"
    except BotoCoreError as exc:
        return f"cannot read the feature registry at {where} ({exc})"
    return None


def open_store(
    settings: Settings | None = None, *, project: str = PROJECT, apply: bool = False
) -> Any:
    """A Feast ``FeatureStore`` over the feature store folder; ``apply`` registers the
    definitions. Without ``apply`` (a reader) the registry must exist already: a reader
    never creates one."""
    from feast import FeatureStore

    settings = settings or load_settings()
    if not apply and (why := registry_missing(settings)):
        raise ShopMLError(f"{why}; run `shopml features materialize` (or a retrain) first")
    settings.feature_store_dir.mkdir(parents=True, exist_ok=True)
    store = FeatureStore(
        config=store_config(settings, project=project), repo_path=str(settings.feature_store_dir)
    )
    if apply:
        store.apply(definitions.OBJECTS)
    return store


def _data_dir(settings: Settings) -> Path:
    data = settings.feature_store_dir / "data"
    if not (data / "build.json").is_file():
        raise ShopMLError(
            f"no feature build in {settings.feature_store_dir}; run `shopml features build SNAPSHOT` first"
        )
    return data


def _latest_rows(path: Path, view: str) -> pd.DataFrame:
    """Each entity's latest row of a feature table.

    In the gridded views every entity existing at the last grid time has a row there, so
    only that time is read (the parquet statistics skip the rest of the history).
    """
    if view == "item_content":
        return pd.read_parquet(path)
    times = pq.read_table(path, columns=["event_timestamp"]).column(0)
    last = pc.max(times)
    return pq.read_table(path, filters=pc.field("event_timestamp") == last).to_pandas()


def materialize(
    settings: Settings | None = None,
    *,
    project: str = PROJECT,
    batch_rows: int = 50_000,
    source: Path | None = None,
) -> dict[str, Any]:
    """Write the latest value of every feature into the online store, from the feature
    build of the store folder, or of ``source`` (a training run's feature folder).

    Writes through Feast's ``write_to_online_store`` with each entity's latest row, rather
    than ``materialize``: the latter re-reads the whole history through Dask and spent
    30 of 37 seconds fingerprinting DataFrames on a 200k-event shop.
    """
    settings = settings or load_settings()
    data = _data_dir(settings if source is None else replace(settings, feature_store_dir=source))
    store = open_store(settings, project=project, apply=True)
    written: dict[str, int] = {}
    for view in VIEWS:
        started = time.perf_counter()
        latest = _latest_rows(data / f"{view}.parquet", view)
        for lo in range(0, len(latest), batch_rows):
            store.write_to_online_store(view, latest.iloc[lo : lo + batch_rows])
        written[view] = len(latest)
        rate = len(latest) / max(time.perf_counter() - started, 1e-9)
        log.info(
            "online store: %s rows of %s (%s rows/s)", f"{len(latest):,}", view, f"{rate:,.0f}"
        )
    return {"rows": written, "views": list(VIEWS), "online_store": settings.online_store}


def get_online(
    entity: str, entity_id: str, settings: Settings | None = None, *, project: str = PROJECT
) -> dict[str, dict[str, Any]]:
    """The online feature values of one user or item, per feature view."""
    if entity not in ("user", "item"):
        raise ShopMLError(f"entity must be 'user' or 'item', not {entity!r}")
    settings = settings or load_settings()
    _data_dir(settings)  # a clear message when nothing was built yet
    store = open_store(settings, project=project)  # refuses a missing registry
    key = f"{entity}_id"
    out: dict[str, dict[str, Any]] = {}
    for name, view in VIEWS.items():
        if join_key(name) != key:
            continue
        refs = [f"{name}:{f.name}" for f in view.features]
        values = store.get_online_features(features=refs, entity_rows=[{key: entity_id}]).to_dict()
        out[name] = {ref.split(":")[1]: values[ref.split(":")[1]][0] for ref in refs}
    return out


def _projections(features: str | Iterable[str]) -> dict[str, list[str]]:
    """Feature refs or a service name to {view: [features]}."""
    if isinstance(features, str):
        if features not in SERVICES:
            raise ShopMLError(
                f"unknown feature service {features!r}; use one of {sorted(SERVICES)}"
            )
        return {
            p.name: [f.name for f in p.features]
            for p in SERVICES[features].feature_view_projections
        }
    out: dict[str, list[str]] = {}
    for ref in features:
        view, _, name = ref.partition(":")
        if view not in VIEWS or name not in {f.name for f in VIEWS[view].features}:
            raise ShopMLError(
                f"unknown feature {ref!r}; features are 'view:name', e.g. 'user_profile:age'"
            )
        out.setdefault(view, []).append(name)
    return out


def get_training_frame(
    labels: pd.DataFrame,
    features: str | Iterable[str] = "recommender_ranker",
    *,
    settings: Settings | None = None,
    timestamp_column: str = "event_timestamp",
) -> pd.DataFrame:
    """``labels`` (entity ids + ``timestamp_column``) with point-in-time-correct features.

    ``features`` is a feature service name or ``view:feature`` refs. Feature columns are
    named ``view__feature``. Row order and every label column are kept; a label with no
    feature row at or before its time gets nulls (Feast's file store would drop the row).
    """
    settings = settings or load_settings()
    data = _data_dir(settings)
    if timestamp_column not in labels.columns:
        raise ShopMLError(f"labels need a {timestamp_column!r} column (the label time)")
    out = labels.reset_index(drop=True).copy()
    out["__row"] = range(len(out))
    out["__ts"] = pd.to_datetime(out[timestamp_column], utc=True).astype("datetime64[us, UTC]")
    out = out.sort_values("__ts", kind="stable")
    for view, names in _projections(features).items():
        key = join_key(view)
        if key not in out.columns:
            raise ShopMLError(f"labels need a {key!r} column for the {view} features")
        table = pd.read_parquet(data / f"{view}.parquet", columns=[key, "event_timestamp", *names])
        table = table.rename(columns={n: f"{view}__{n}" for n in names}).rename(
            columns={"event_timestamp": "__fts"}
        )
        table["__fts"] = table["__fts"].astype("datetime64[us, UTC]")
        table = table.sort_values("__fts", kind="stable")
        out[key] = out[key].astype(str)
        out = pd.merge_asof(
            out,
            table,
            left_on="__ts",
            right_on="__fts",
            by=key,
            direction="backward",
            allow_exact_matches=True,
        )
        out = out.drop(columns="__fts")
    return out.sort_values("__row").drop(columns=["__row", "__ts"]).reset_index(drop=True)


# ----------------------------------------------------------------------------- erasure


def _user_keys(user_ids: Iterable[str], project: str) -> dict[str, bytes]:
    """Each shopper's key in the online store: Feast's serialised entity key (version 3),
    followed by the project name in Redis."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return {
        uid: serialize_entity_key(
            EntityKey(join_keys=["user_id"], entity_values=[Value(string_val=uid)]),
            entity_key_serialization_version=3,
        )
        for uid in user_ids
    }


def _user_tables(con: Any, project: str) -> list[str]:
    """The online tables of the views keyed by user_id (``<project>_<view>``)."""
    names = {f"{project}_{v}" for v in VIEWS if join_key(v) == "user_id"}
    rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return sorted(r[0] for r in rows if r[0] in names)


def online_users(
    user_ids: Iterable[str], settings: Settings, *, delete: bool = False, project: str = PROJECT
) -> int:
    """How many online-store rows hold these shoppers (SQLite: feature rows; Redis: keys);
    with ``delete``, those rows are deleted. Feast has no per-entity delete, so this goes to
    the store Feast wrote: its tables (SQLite) or its keys (Redis)."""
    keys = _user_keys(user_ids, project)
    if not keys:
        return 0
    if settings.online_store == "redis":
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        try:
            names = [k + project.encode() for k in keys.values()]
            counted: Any = client.delete(*names) if delete else client.exists(*names)
            return int(counted)
        except redis.exceptions.ConnectionError as exc:
            raise ShopMLError(f"online store {redact(settings.redis_url)}: {exc}") from exc
        finally:
            client.close()
    import sqlite3

    path = settings.feature_store_dir / "online.db"
    if not path.is_file():
        return 0
    found = 0
    with sqlite3.connect(path) as con:
        blobs = [sqlite3.Binary(k) for k in keys.values()]
        marks = ",".join("?" * len(blobs))
        for table in _user_tables(con, project):
            quoted = '"' + table.replace('"', '""') + '"'
            verb = "DELETE" if delete else "SELECT COUNT(*)"
            cur = con.execute(f"{verb} FROM {quoted} WHERE entity_key IN ({marks})", blobs)
            found += cur.rowcount if delete else int(cur.fetchone()[0])
    return found
