"""The production shape, end to end, on this machine's PostgreSQL and Redis with S3 served by
moto on loopback: `shopml stack up --profile production` (Airflow with the CeleryExecutor
and three workers of their own homes, w1 serving `default` only; MLflow with basic auth;
the serving API on S3), a retrain triggered over REST whose training steps run only on the
workers serving `training` and survive faults (the worker running `train_ranker` killed
with SIGKILL: the retry runs on the other one; the MLflow server restarted mid-run),
approvals by the assigned reviewer (another login is refused), promotion of both models to
the S3 bucket with `champion` moved by the promoter account, which neither an engineer's
MLflow account nor the pipeline's can move, one registered challenger and one ledger line
each, and the serving API answering with the promoted versions."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipelines.data.generator import generate_shop
from pipelines.data.snapshot import Snapshot
from pipelines.errors import ShopMLError
from pipelines.io import environ
from pipelines.orchestration.airflow_api import AirflowClient
from pipelines.orchestration.production import Layout, down, restart_mlflow, status, up
from pipelines.privacy.audit import audit
from pipelines.privacy.forget import forget
from pipelines.promotion.bucket import open_bucket
from pipelines.promotion.promote import ledger_entries, promote, verify
from pipelines.registry.accounts import init_accounts
from pipelines.settings import load_settings
from serving.keys import generate_keys
from serving.online import OnlineUserFeatures
from tests.promotion.test_promote import review
from tests.shops import LIGHT_TOML, SHOP

pytestmark = [
    pytest.mark.timeout(1800),  # ~12 minutes on 2 free cores: three workers, two faults' waits
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.needs_postgres,
    pytest.mark.needs_redis,
]
HEAVY = {"build_features", "train_candidates", "train_ranker", "build_search_index", "train_search_ranker"}  # fmt: skip
CANDIDATES = "shopml-recommender-candidates"


def _ports(n: int) -> list[int]:
    """``n`` free ports, each with its next 5 free too (Airflow's log servers: the
    scheduler's, the triggerer's and three workers')."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for k in range(6):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port + k))
        except OSError:
            continue
        if all(abs(port - p) > 6 for p in found):
            found.append(port)
    return found


class Relay:
    """A TCP relay to ``target`` that can be cut: while cut, connecting is refused and the
    open connections are dropped, as S3 looks to its clients when the network to it fails."""

    def __init__(self, target: str) -> None:
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.port = _ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.restore()

    def restore(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            listener = socket.socket()
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(128)
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:  # from here on, no connection is registered (nor relayed)
            listener, self._listener = self._listener, None
            dropped, self._open = self._open, set()
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            listener.close()
        for conn in dropped:
            _close(conn)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                _close(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                live = self._listener is listener
                if live:
                    self._open |= {client, upstream}
            if not live:  # cut while connecting
                _close(client)
                _close(upstream)
                continue
            done = threading.Semaphore(0)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b, done), daemon=True).start()
            threading.Thread(target=self._reap, args=(client, upstream, done), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, done: threading.Semaphore) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)
        done.release()

    def _reap(self, a: socket.socket, b: socket.socket, done: threading.Semaphore) -> None:
        """Close both ends once both directions are finished."""
        done.acquire()
        done.acquire()
        with self._lock:
            self._open -= {a, b}
        _close(a)
        _close(b)


def _close(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)
    conn.close()


def _services() -> None:
    import psycopg2
    import redis

    try:
        psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres", connect_timeout=2).close()
    except psycopg2.Error as exc:
        pytest.skip(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({str(exc).strip()})")
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=1).ping()
    except redis.exceptions.RedisError as exc:
        pytest.skip(f"Redis is not reachable at 127.0.0.1:6379 ({exc})")


def _drop_databases(prefix: str) -> None:
    import psycopg2

    con = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    con.autocommit = True
    with con.cursor() as cur:
        for part in ("airflow", "mlflow", "mlflow_auth"):
            cur.execute(f'DROP DATABASE IF EXISTS "{prefix}_{part}" WITH (FORCE)')
    con.close()


@pytest.fixture
def production(
    tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Layout, dict[str, Any], Relay]]:
    _services()
    relay = Relay(s3)  # every component reaches S3 through it: the test can cut it
    airflow_port, mlflow_port, serving_port = _ports(3)
    name = f"shopml_e2e_{os.getpid()}"
    env = {
        "SHOPML_ENV": "production",
        "SHOPML_HOME": str(tmp_path / "home"),
        "SHOPML_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        "SHOPML_AIRFLOW_API_URL": f"http://127.0.0.1:{airflow_port}",
        "SHOPML_SERVING_BUCKET_URI": "s3://serving/shopml",
        "SHOPML_WORK_URI": "s3://work/runs",
        "SHOPML_MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow/artifacts",
        "SHOPML_S3_ENDPOINT_URL": relay.url,
        "SHOPML_STACK_NAME": name,
        "SHOPML_STACK_BROKER_URL": "redis://127.0.0.1:6379/11",
        "SHOPML_REDIS_URL": "redis://127.0.0.1:6379/12",
        "SHOPML_REVIEWERS": "alice",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import redis

    for db in (11, 12):
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    _drop_databases(name)
    layout = Layout.of(load_settings(), serving_port)
    try:
        info = up(layout, generate_keys, workers=3, reviewers="alice")
        yield layout, info, relay
    finally:
        relay.restore()  # a failed test may have left S3 cut
        down(layout)
        relay.cut()
        _drop_databases(name)


@contextmanager
def account(user: str, password: str) -> Iterator[MlflowClient]:
    """MLflow calls inside run as ``user`` (how a process picks its MLflow login)."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
    with environ(dict(zip(keys, (user, password), strict=True))):
        url = load_settings().mlflow_tracking_uri
        yield MlflowClient(url, url)


def _wait(check: Any, what: str, timeout: float = 600, poll: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_retrain_loop_in_the_production_shape(
    production: tuple[Layout, dict[str, Any], Relay], tmp_path: Path, s3: str
) -> None:
    layout, info, relay = production
    settings = layout.settings
    assert {h.component for h in status(layout) if h.running} == {
        "mlflow", "scheduler", "dag-processor", "triggerer", "api-server", "worker-w1",
        "worker-w2", "worker-w3", "serving",
    }  # fmt: skip
    assert all(h.healthy is not False for h in status(layout))
    secrets = json.loads(layout.secrets_file.read_text())
    assert layout.secrets_file.stat().st_mode & 0o777 == 0o600
    passwords = json.loads((settings.airflow_home / "passwords.json").read_text())
    url = info["urls"]["airflow"]

    snapshot = settings.snapshots_dir / "shop"
    generate_shop(SHOP, out=snapshot)
    config = tmp_path / "pipeline.toml"
    config.write_text(LIGHT_TOML)
    engineer = AirflowClient(url, "engineer", passwords["engineer"])
    run = engineer.trigger("shopml_retrain", {"snapshot": str(snapshot), "config": str(config)})
    run_id = run["dag_run_id"]
    admin = AirflowClient(url, "admin", passwords["admin"])

    def tasks(run: str = run_id) -> dict[str, dict[str, Any]]:
        path = f"/api/v2/dags/shopml_retrain/dagRuns/{run}/taskInstances"
        return {t["task_id"]: t for t in admin._call("GET", path)["task_instances"]}

    alice = AirflowClient(url, "alice", passwords["alice"])

    def approve(run: str, review_task: str, check_others: bool = False) -> None:
        _wait(lambda: tasks(run)[review_task]["state"] == "awaiting_input", review_task)
        if check_others:  # another login: refused (403 from Airflow)
            with pytest.raises(ShopMLError, match=r"refused 'engineer'.*not a respondent"):
                engineer.answer(run, True, "not mine", task_id=review_task)
        alice.answer(run, True, "looks right", task_id=review_task)

    def finish(run: str) -> dict[str, Any]:
        final = _wait(
            lambda: (
                (r := admin.dag_run("shopml_retrain", run))["state"] in ("success", "failed") and r
            ),
            "the run to finish",
        )
        assert final["state"] == "success", {t: v["state"] for t, v in tasks(run).items()}
        return tasks(run)

    # fault 1: the worker running train_ranker killed (SIGKILL) mid-task
    victim_ti = _wait(
        lambda: (t := tasks()["train_ranker"])["state"] == "running" and t["hostname"] and t,
        "train_ranker to run",
        poll=0.5,
    )
    victim = victim_ti["hostname"].split("@")[0]
    os.killpg(
        json.loads(layout.state_file.read_text())["pgids"][f"worker-{victim}"], signal.SIGKILL
    )
    # fault 2: the MLflow server down for 20 s while register_challenger runs (it retries
    # its calls; the task itself never retries: a second try would register twice)
    _wait(lambda: tasks()["register_challenger"]["state"] == "running", "registration", poll=0.2)
    outage = datetime.now(UTC)
    restart_mlflow(layout, down_seconds=20)
    back = datetime.now(UTC)
    approve(run_id, "await_search_review", check_others=True)
    _wait(lambda: tasks()["promote_search"]["state"] == "success", "promote_search")

    # fault 3: S3 unreachable while the recommender is promoted: the promotion fails
    # cleanly (no current.json, no champion, no ledger line), its retry completes
    _wait(lambda: tasks()["await_review"]["state"] == "awaiting_input", "await_review")
    relay.cut()
    approve(run_id, "await_review")
    failed = _wait(
        lambda: (t := tasks()["promote_model"])["state"] in ("up_for_retry", "failed") and t,
        "the promotion to fail while S3 is cut",
        poll=1,
    )
    assert failed["state"] == "up_for_retry", failed
    direct = replace(settings, s3_endpoint_url=s3)  # S3 itself, past the cut relay
    bucket = open_bucket(settings.serving_bucket_uri, s3)
    assert not bucket.exists("shopml-recommender/current.json")
    assert ledger_entries(direct, "shopml-recommender") == []
    with account("admin", secrets["mlflow_admin"]) as root, pytest.raises(MlflowException):
        root.get_model_version_by_alias("shopml-recommender", "champion")
    relay.restore()
    found = finish(run_id)
    assert found["promote_model"]["try_number"] >= 2, found["promote_model"]
    registration = found["register_challenger"]
    assert registration["try_number"] == 1, registration
    assert datetime.fromisoformat(registration["start_date"]) < outage
    assert datetime.fromisoformat(registration["end_date"]) > back, (registration, back)
    log = admin._call(
        "GET",
        f"/api/v2/dags/shopml_retrain/dagRuns/{run_id}/taskInstances/register_challenger/logs/1",
        params={"full_content": "true"},
    )
    assert "Connection refused" in json.dumps(log), "registration never met the outage"
    ranker = found["train_ranker"]
    assert ranker["try_number"] >= 2, ranker  # retried after its worker died...
    survivor = ranker["hostname"].split("@")[0]
    assert survivor not in (victim, "w1"), (victim, survivor)  # ...on the other training worker

    # which worker and queue ran each task, as Airflow recorded it
    ran = {t: v for t, v in found.items() if v["state"] == "success"}
    for task, ti in ran.items():
        queue = "training" if task in HEAVY else "default"
        assert ti["queue"] == queue, (task, ti["queue"])
        if task in HEAVY:  # w1 does not serve "training"
            assert not ti["hostname"].startswith("w1@"), (task, ti["hostname"])
            assert ti["pool"] == "shopml_training"
    assert "w1" in {ti["hostname"].split("@")[0] for ti in ran.values()}
    # each worker kept its own home: nothing of the run's work files stayed on either disk
    for worker in {"w1", "w2", "w3"} - {victim}:  # the killed one could not clean up
        scratch = layout.worker_home(worker) / "scratch"
        assert not scratch.exists() or not any(scratch.iterdir())

    # promoted into the S3 bucket; champion moved (by the promoter) to the copy
    for model, candidates in (
        ("shopml-recommender", CANDIDATES),
        ("shopml-search", "shopml-search-candidates"),
    ):
        (entry,) = ledger_entries(settings, model)
        assert (entry["version"], entry["approved_by"], entry["source"]) == (
            1, "alice", f"{candidates}/1",
        )  # fmt: skip
    mlflow_url = info["urls"]["mlflow"]
    with account("admin", secrets["mlflow_admin"]):  # a second init keeps what exists
        again = init_accounts(
            settings,
            {"shopml-pipeline": "x", "shopml-promoter": "x", "engineer": "x"},
            engineers=["engineer"],
        )
        assert again.users_created == again.models_created == []
    with account("engineer", secrets["mlflow_engineer"]) as erin:
        champion = erin.get_model_version_by_alias("shopml-recommender", "champion")
        assert (champion.version, champion.source) == ("1", f"models:/{CANDIDATES}/1")
        exp = erin.get_experiment_by_name("shopml-recommender")  # engineers log runs
        assert exp is not None
        erin.log_metric(erin.create_run(exp.experiment_id).info.run_id, "ndcg_at_10", 0.1)
    # neither an engineer's account nor the pipeline's may move champion
    for user, password in (("engineer", secrets["mlflow_engineer"]), ("shopml-pipeline", secrets["mlflow_pipeline"])):  # fmt: skip
        with account(user, password) as client:
            for attempt in (
                lambda c=client: c.set_registered_model_alias(
                    "shopml-recommender", "champion", "1"
                ),
                lambda c=client: c.delete_registered_model_alias("shopml-recommender", "champion"),
                lambda c=client: c.copy_model_version(
                    f"models:/{CANDIDATES}/1", "shopml-recommender"
                ),
            ):
                with pytest.raises(MlflowException, match=r"PERMISSION_DENIED|403"):
                    attempt()
    with account("shopml-pipeline", secrets["mlflow_pipeline"]) as client:
        # a retried promotion (as the promoter, from its 0600 file) finds its copy
        again_promoted = promote(version=1, settings=settings, review=review(run_id, "alice"))
        assert not again_promoted.changed and again_promoted.version == 1
        assert len(client.search_model_versions("name = 'shopml-recommender'")) == 1
        # one registered challenger despite the retries: registration itself never retries
        assert len(client.search_model_versions(f"name = '{CANDIDATES}'")) == 1
        assert client.get_model_version_by_alias("shopml-recommender", "champion").version == "1"
    assert httpx.get(f"{mlflow_url}/api/2.0/mlflow/registered-models/search").status_code == 401

    # the serving API reads the S3 bucket and answers with the promoted versions
    key = (settings.serving_keys_file.parent / "serving-client.key").read_text().strip()
    serving = httpx.Client(base_url=info["urls"]["serving"], headers={"X-API-Key": key}, timeout=10)
    models = _wait(
        lambda: (
            {m["model"]: m["version"] for m in serving.get("/v1/models").json().get("models", [])}
            if serving.get("/readyz").status_code == 200
            else None
        ),
        "the serving API to load both models",
        timeout=120,
    )
    assert models == {"shopml-recommender": 1, "shopml-search": 1}
    user = "u1"
    answer = serving.get(f"/v1/recommendations/{user}", params={"k": 5}).json()
    assert answer["version"] == 1 and len(answer["items"]) == 5

    # erasure in the production shape: the S3 bucket's promoted versions, the tracking
    # server's artifacts (through its API, as the pipeline's account), Redis, the S3 work
    # storage; serving drops the shopper's events once it has read the erasure list
    events = Snapshot.open(snapshot).read("events", ["user_id"]).to_pandas()
    user = str(events["user_id"].value_counts().index[0])  # in every store
    # Feast: the run materialised into Redis, and a process with a feature folder of its own
    # (another host: here, this one) reads the values through the registry on S3
    assert not list(layout.settings.feature_store_dir.rglob("registry.db"))
    reader = OnlineUserFeatures(replace(settings, feature_store_dir=tmp_path / "reader"))
    values = reader.get(user)
    assert values is not None and sum(not math.isnan(v) for v in values) >= 3, values
    event = {"type": "add_to_cart", "user_id": user, "item_id": answer["items"][0]["item_id"]}
    posted = serving.post("/v1/events", json={"events": [event]})
    assert posted.status_code == 202 and posted.json()["accepted"] == 1, posted.text
    with account("shopml-pipeline", secrets["mlflow_pipeline"]):
        first = forget([user], reason="e2e erasure", requested_by="dpo", settings=settings)
        assert first.bundles, first  # both promoted versions held the shopper
        _wait(
            lambda: serving.post("/v1/events", json={"events": [event]}).json()["accepted"] == 0,
            "the serving API to read the erasure list",
            timeout=60,
            poll=1,
        )
        # the spool file serving was writing when the list changed: a second forget
        # reaches it once serving has moved to a new file (docs/privacy.md)
        second = forget([user], reason="e2e erasure", requested_by="dpo", settings=settings)
        assert not second.pending, second.pending
        audited = audit([user], settings)
        assert audited.clean, audited.traces[:5]
        assert not [n for n in audited.not_searched if n.startswith("runs:/") or "models:/" in n]
    assert verify(settings, "shopml-recommender").ok and verify(settings, "shopml-search").ok
    assert {e["action"] for e in ledger_entries(settings, "shopml-recommender")} == {
        "promote",
        "erase",
    }
    _wait(
        lambda: (
            serving.get("/v1/models").json()["models"][0]["version"] == 1
            and serving.get(f"/v1/recommendations/{user}", params={"k": 5}).status_code == 200
        ),
        "serving to answer after the rewrite",
        timeout=60,
    )
