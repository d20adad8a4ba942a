"""The retrain DAG end to end in both profiles: wall time per task and in total, and what a
second Celery worker buys (the recommender and search branches can run side by side).

For each configuration it starts a stack in a fresh home, triggers `shopml_retrain` on one
generated shop, approves both models as the reviewer as soon as they are asked, and reads
every task's start, end, worker and queue from Airflow's REST API:

- embedded: Airflow on SQLite with the LocalExecutor (`make up`'s stack), one task at a time;
- production: `shopml stack up --profile production` on this machine's PostgreSQL and Redis,
  S3 served by moto on loopback, with 1 and then 2 Celery workers.

    python benchmarks/bench_stack.py [--events 1000000] [--configs embedded,production-1,production-2]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import write_result

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipelines.orchestration.airflow_api import AirflowClient  # noqa: E402


def _port() -> int:
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        try:
            for k in range(1, 6):
                with socket.socket() as t:
                    t.bind(("127.0.0.1", port + k))
            return port
        except OSError:
            continue


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()


def run_dag(url: str, passwords: dict[str, str], snapshot: Path, reviewer: str) -> dict[str, Any]:
    """Trigger, approve what is asked, wait; the run's tasks as Airflow recorded them."""
    engineer = AirflowClient(url, "engineer", passwords["engineer"])
    admin = AirflowClient(url, "admin", passwords["admin"])
    approver = AirflowClient(url, reviewer, passwords[reviewer])
    run_id = engineer.trigger("shopml_retrain", {"snapshot": str(snapshot), "config": ""})[
        "dag_run_id"
    ]
    path = f"/api/v2/dags/shopml_retrain/dagRuns/{run_id}/taskInstances"
    answered: set[str] = set()
    asked_at: dict[str, float] = {}
    started = time.monotonic()
    while True:
        tis = {t["task_id"]: t for t in admin._call("GET", path)["task_instances"]}
        for task in ("await_review", "await_search_review"):
            if tis.get(task, {}).get("state") != "awaiting_input" or task in answered:
                asked_at.pop(task, None)
                continue
            # answer once the request has waited 15 s: an answer within seconds of the
            # request can race the scheduler's handling of the paused task's exit
            # (Airflow 3.3 then fails the approval task; docs/benchmarks.md)
            first = asked_at.setdefault(task, time.monotonic())
            if time.monotonic() - first >= 15:
                approver.answer(run_id, True, "benchmark", task_id=task)
                answered.add(task)
        run = admin.dag_run("shopml_retrain", run_id)
        if run["state"] in ("success", "failed"):
            break
        elapsed = time.monotonic() - started
        print(f"  {elapsed:6.0f} s: " + ", ".join(
            f"{t}={v['state']}" for t, v in tis.items() if v["state"] in ("running", "queued")
        ), flush=True)  # fmt: skip
        time.sleep(10)
    tasks = {
        t: {
            "state": v["state"],
            "seconds": _seconds(v.get("start_date"), v.get("end_date")),
            "start": v.get("start_date"),
            "end": v.get("end_date"),
            "worker": (v.get("hostname") or "").split("@")[0],
            "queue": v.get("queue"),
        }
        for t, v in tis.items()
    }
    reviews = {"await_review", "await_search_review"}
    starts = [v["start"] for v in tasks.values() if v["start"]]
    ends = [v["end"] for v in tasks.values() if v["end"]]
    waiting = sum(v["seconds"] or 0.0 for t, v in tasks.items() if t in reviews)
    return {
        "state": run["state"],
        "wall_seconds": _seconds(min(starts), max(ends)),
        "review_wait_seconds": round(waiting, 1),
        "busy_seconds": round(
            sum(v["seconds"] or 0.0 for t, v in tasks.items() if t not in reviews), 1
        ),
        "tasks": tasks,
    }


def embedded(root: Path, snapshot: Path) -> dict[str, Any]:
    from pipelines.orchestration.stack import start, stop
    from pipelines.settings import load_settings

    settings = load_settings({"SHOPML_HOME": str(root / "home")})
    stack = start(settings, port=_port(), reviewers="reviewer", timeout=300)
    try:
        return run_dag(stack.url, stack.passwords, snapshot, "reviewer")
    finally:
        stop(settings)


def production(root: Path, snapshot: Path, workers: int) -> dict[str, Any]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, s3_port = server.get_host_and_port()
    name = f"shopml_bench_{os.getpid()}_{workers}"
    env = {
        **os.environ,
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
        "SHOPML_ENV": "production", "SHOPML_HOME": str(root / "home"),
        "SHOPML_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_port()}",
        "SHOPML_AIRFLOW_API_URL": f"http://127.0.0.1:{_port()}",
        "SHOPML_SERVING_BUCKET_URI": "s3://serving/shopml", "SHOPML_WORK_URI": "s3://work/runs",
        "SHOPML_MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow/artifacts",
        "SHOPML_S3_ENDPOINT_URL": f"http://{host}:{s3_port}", "SHOPML_STACK_NAME": name,
        "SHOPML_STACK_BROKER_URL": "redis://127.0.0.1:6379/13", "SHOPML_REDIS_URL": "redis://127.0.0.1:6379/14",
        "SHOPML_REVIEWERS": "alice",
    }  # fmt: skip
    os.environ.update(env)
    import redis

    for db in (13, 14):  # a stopped stack's queued messages would go to this one's workers
        redis.Redis(host="127.0.0.1", port=6379, db=db).flushdb()
    from pipelines.orchestration.production import Layout, down, up
    from pipelines.settings import load_settings
    from serving.keys import generate_keys

    layout = Layout.of(load_settings(), _port())
    try:
        up(layout, generate_keys, workers=workers, reviewers="alice", timeout=300)
        passwords = json.loads((layout.settings.airflow_home / "passwords.json").read_text())
        return run_dag(f"http://127.0.0.1:{layout.airflow_port}", passwords, snapshot, "alice")
    finally:
        down(layout)
        server.stop()
        _drop(name)


def _drop(prefix: str) -> None:
    import psycopg2

    con = psycopg2.connect("postgresql://postgres@127.0.0.1:5432/postgres")
    con.autocommit = True
    with con.cursor() as cur:
        for part in ("airflow", "mlflow", "mlflow_auth"):
            cur.execute(f'DROP DATABASE IF EXISTS "{prefix}_{part}" WITH (FORCE)')
    con.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--configs", default="embedded,production-1,production-2")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shopml-bench-stack"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    snapshot = args.workdir / f"shop-{args.events}"
    if not snapshot.exists():
        users, items = args.events // 20, min(50_000, args.events // 200)
        subprocess.run(
            [sys.executable, "-m", "pipelines.cli", "data", "generate", "--out", str(snapshot),
             "--users", str(users), "--items", str(items), "--events", str(args.events), "--seed", "7"],
            check=True, cwd=REPO,
        )  # fmt: skip
    runs: dict[str, Any] = {}
    for config in args.configs.split(","):
        root = args.workdir / config
        shutil.rmtree(root, ignore_errors=True)
        print(f"{config}: starting", flush=True)
        t0 = time.monotonic()
        if config == "embedded":
            runs[config] = embedded(root, snapshot)
        else:
            runs[config] = production(root, snapshot, int(config.split("-")[1]))
        runs[config]["with_stack_seconds"] = round(time.monotonic() - t0, 1)
        r = runs[config]
        print(f"{config}: {r['state']}, wall {r['wall_seconds']:.0f} s (review wait "
              f"{r['review_wait_seconds']:.0f} s), busy {r['busy_seconds']:.0f} s", flush=True)  # fmt: skip
        path = write_result(  # after each configuration: a long run keeps what it measured
            "stack_retrain",
            f"python benchmarks/bench_stack.py --events {args.events} --configs {args.configs}",
            {"events": args.events, "runs": runs},
            args.out,
        )
        print(f"results written to {path}")
        for task, v in sorted(r["tasks"].items(), key=lambda kv: kv[1]["start"] or ""):
            print(
                f"  {task:28} {v['seconds'] and round(v['seconds'], 1)!s:>8} s  {v['worker']:4} {v['queue']}"
            )


if __name__ == "__main__":
    main()
