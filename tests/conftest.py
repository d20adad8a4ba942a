"""Shared fixtures. Generated data is made here; real data is read from ../shared/data when present."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines.data.generator import GeneratorConfig, World, build_world, generate_shop
from tests.served import ServedShop
from tests.shops import TrainedShop

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHOPML_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_data(name: str) -> Path:
    """The folder of a real dataset, or skip the test with the reason."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real dataset {name} not found at {path} (set SHOPML_SHARED_DATA)")
    return path


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """S3 on loopback (moto's server) with the buckets ``serving`` and ``work`` and nothing
    else; yields its endpoint URL."""
    import boto3
    import httpx
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        # moto keeps its buckets per process, not per server: start from none
        httpx.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
        client = boto3.client("s3", endpoint_url=endpoint)
        for name in ("serving", "work"):
            client.create_bucket(Bucket=name)
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own SHOPML_HOME so nothing touches the working tree."""
    home = tmp_path / "shopml-home"
    monkeypatch.setenv("SHOPML_HOME", str(home))
    for var in ("SHOPML_ENV", "SHOPML_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return home


SMALL = GeneratorConfig(users=3_000, items=600, events=80_000, seed=7, days=60, judged_queries=200)


class Shop:
    """A generated snapshot plus the hidden world it came from."""

    def __init__(self, path: Path, cfg: GeneratorConfig) -> None:
        self.path = path
        self.cfg = cfg
        self.world: World = build_world(cfg)
        self.users = pd.read_parquet(path / "users.parquet")
        self.items = pd.read_parquet(path / "items.parquet")
        self.events = pd.read_parquet(path / "events.parquet")
        self.queries = pd.read_parquet(path / "queries.parquet")
        self.judgments = pd.read_parquet(path / "judgments.parquet")

    def item_number(self, ids: pd.Series) -> pd.Series:
        return ids.str[1:].astype(int)

    def user_number(self, ids: pd.Series) -> pd.Series:
        return ids.str[1:].astype(int)


@pytest.fixture(scope="session")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> Shop:
    out = tmp_path_factory.mktemp("shops") / "small"
    generate_shop(SMALL, out=out)
    return Shop(out, SMALL)


@pytest.fixture(scope="session")
def trained_shop(tmp_path_factory: pytest.TempPathFactory) -> TrainedShop:
    """The shared generated shop, trained once (tests/shops.py)."""
    return TrainedShop(tmp_path_factory.mktemp("trained-shop"))


@pytest.fixture(scope="session")
def served_shop(trained_shop: TrainedShop, tmp_path_factory: pytest.TempPathFactory) -> ServedShop:
    """The trained shop's models promoted into a bucket (tests/served.py)."""
    return ServedShop(trained_shop, tmp_path_factory.mktemp("served-shop"))


@pytest.fixture
def redis_available() -> None:
    """Skip unless Redis answers on 127.0.0.1:6379 (tests marked needs_redis use it)."""
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is not reachable at 127.0.0.1:6379 ({exc})")
