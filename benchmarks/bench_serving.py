"""Serving speed: the serving API under load, on 2 cores, the load generator included.

Targets (issue "Serving API"): on the generated 1M-event shop, recommendations and search
each sustain >= 300 requests/s for 60 s with p99 <= 30 ms and no errors; report the maximum
throughput and p50/p95/p99 per endpoint, the cost per request split by stage, and the
memory of the served process.

Setup (once per ``--home``; reused when its bucket already serves both models): generate
the shop, train the recommender (`shopml train`'s steps) and the search model, register,
evaluate (a gate every model passes: the benchmark measures serving, not the gate) and
promote both with a recorded approval, as the retrain DAG would. Then ``shopml serve
--workers N`` runs in its own process group and ``benchmarks/loadgen.py`` (open loop, its
own process) sends requests at fixed rates: shoppers of the log for recommendations (their
plain lists, precomputed when the version loads: serving/known.py), the same shoppers with
one excluded item for recommendations_live (computed live: candidates, features, re-rank),
the log's queries with their shoppers for search.

    python benchmarks/bench_serving.py [--events 1000000] [--home DIR] [--workers 2] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psutil
from common import run_child, write_result

REPO = Path(__file__).resolve().parents[1]
SETUP = """
import logging, os
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("great_expectations", "feast", "alembic", "mlflow", "bm25s"):
    logging.getLogger(name).setLevel(logging.WARNING)
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
from pipelines.evaluation.gate import Check, GateConfig
from pipelines.evaluation.search_eval import SearchEvalConfig, evaluate_search
from pipelines.promotion.promote import Review, promote
from pipelines.recommender.config import TrainConfig
from pipelines.recommender.plan import plan_training, prepare_features, train_candidates, train_ranker
from pipelines.registry.challenger import register_challenger
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL, register_search
from pipelines.search.config import SearchConfig
from pipelines.search.model import train
from pipelines.settings import load_settings
settings = load_settings()
home = settings.home
shop = home / "snapshots" / "bench"
if not shop.exists():
    generate_shop(GeneratorConfig(events={events}, seed=11), out=shop)
os.environ.update(AIRFLOW_CTX_DAG_ID="shopml_retrain", AIRFLOW_CTX_DAG_RUN_ID="bench-1")
work = home / "runs" / "bench"
plan = plan_training(shop, TrainConfig())
plan.save(work)
prepare_features(plan, work)
train_candidates(work_dir=work, settings=settings)
train_ranker(work_dir=work)
rec = register_challenger(work_dir=work, settings=settings).version
evaluate(model_uri=f"models:/{{MODEL_NAME}}/{{rec}}", snapshot_uri=shop, settings=settings,
         cfg=EvaluateConfig(gate=GateConfig([Check("hit_rate@10", min=0.0)])), use_champion=False)
search = register_search(train(shop, SearchConfig()), settings=settings).version
evaluate_search(model_uri=f"models:/{{SEARCH_MODEL}}/{{search}}", snapshot_uri=shop, settings=settings,
                cfg=SearchEvalConfig(gate=GateConfig([Check("ndcg@10", min=0.0)], min_users=5)))
for name, version, task in ((MODEL_NAME, rec, "await_review"), (SEARCH_MODEL, search, "await_search_review")):
    review = Review("shopml_retrain", "bench-1", task, True, ("Approve",), "reviewer",
                    "2026-12-06T00:00:00+00:00", ("reviewer",), "benchmark")
    promote(version=version, settings=settings, review=review, name=name)
result = {{"recommender_version": rec, "search_version": search}}
"""
STAGES = """
import time, logging
from pathlib import Path
import numpy as np
logging.basicConfig(level=logging.WARNING)
from threadpoolctl import threadpool_limits
from pipelines.data.snapshot import Snapshot
from pipelines.promotion.bucket import open_bucket
from pipelines.promotion.layout import read_pointer
from pipelines.ranking.lambdamart import predict
from pipelines.recommender.predict import RecommendRequest
from pipelines.recommender.rows import features, union
from pipelines.search import ranker
from pipelines.settings import load_settings
from serving.versions import load_version
settings = load_settings()
bucket = open_bucket(settings.serving_bucket_uri)
cache = Path({cache!r})
rec = load_version(bucket, "shopml-recommender", read_pointer(bucket, "shopml-recommender")["version"], cache).obj
srch = load_version(bucket, "shopml-search", read_pointer(bucket, "shopml-search")["version"], cache).obj
log = Snapshot.open(settings.home / "snapshots" / "bench").read("queries", columns=["user_id", "text"]).to_pandas().tail(1000)
t = {{"candidates": 0.0, "features": 0.0, "rerank": 0.0, "answer": 0.0}}
with threadpool_limits(1):
    for u in log["user_id"]:
        t0 = time.perf_counter()
        req = RecommendRequest(user_ids=[u], k=10)
        batch = rec._batch(req, np.asarray([u], dtype=object), slice(0, 1))
        cands = union(rec.generators, batch, rec.cfg.per_source, rec.ctx.history.item_exists,
                      repeat_allowed=rec.ctx.history.repeat_allowed)
        t1 = time.perf_counter()
        x = features(cands, batch, rec.ctx, rec.items, rec.genders, rec.store)
        t2 = time.perf_counter()
        s = predict(rec.booster, x)
        t3 = time.perf_counter()
        rec._top(np.asarray([u], dtype=object), cands, x, s, req, np.ones(1, bool))
        t4 = time.perf_counter()
        for k, a, b in (("candidates", t0, t1), ("features", t1, t2), ("rerank", t2, t3), ("answer", t3, t4)):
            t[k] += b - a
    st = {{"retrieval": 0.0, "features": 0.0, "rerank": 0.0}}
    for q, u in zip(log["text"], log["user_id"]):
        t0 = time.perf_counter()
        c = srch.index.candidates(q)
        t1 = time.perf_counter()
        x = ranker.features(srch.index, c, srch.personal(u, c.items))
        t2 = time.perf_counter()
        predict(srch.booster, x)
        t3 = time.perf_counter()
        for k, a, b in (("retrieval", t0, t1), ("features", t1, t2), ("rerank", t2, t3)):
            st[k] += b - a
n = len(log)
from serving.known import compute
known = compute(rec, settings.serving_precomputed_shoppers)
result = {{"precomputed": {{"shoppers": known.shoppers, "seconds": round(known.seconds, 2),
                          "mb": round(known.nbytes / 1e6, 1)}},
          "recommendations_ms": {{k: round(v / n * 1000, 3) for k, v in t.items()}},
          "search_ms": {{k: round(v / n * 1000, 3) for k, v in st.items()}},
          "candidates_per_request": int(len(cands.item)), "requests": n}}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _paths(home: Path, out: Path) -> dict[str, Path]:
    """Request paths for each endpoint, from the shop's query log (shoppers, queries)."""
    import pandas as pd

    log = pd.read_parquet(
        home / "snapshots" / "bench" / "queries.parquet", columns=["user_id", "text"]
    )
    log = log.sample(n=min(5000, len(log)), random_state=0)
    items = pd.read_parquet(home / "snapshots" / "bench" / "items.parquet", columns=["item_id"])
    pages = items["item_id"].sample(n=len(log), replace=True, random_state=0).astype(str)
    files = {
        # known shoppers' plain lists: precomputed when the version loads (serving/known.py)
        "recommendations": [f"/v1/recommendations/{quote(str(u))}?k=10" for u in log["user_id"]],
        # the same shoppers, minus the item on the page: computed live (candidates,
        # features, re-rank) in the batcher
        "recommendations_live": [
            f"/v1/recommendations/{quote(str(u))}?k=10&exclude={quote(i)}"
            for u, i in zip(log["user_id"], pages, strict=True)
        ],
        "search": [
            f"/v1/search?q={quote(str(q))}&user_id={quote(str(u))}&k=10"
            for q, u in zip(log["text"], log["user_id"], strict=True)
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, lines in files.items():
        paths[name] = out / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def _rss_gb(pid: int) -> float:
    proc = psutil.Process(pid)
    procs = [proc, *proc.children(recursive=True)]
    return round(sum(p.memory_info().rss for p in procs) / 1024**3, 2)


def _load(url: str, key: str, paths: Path, rate: float, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "loadgen.py"), "--url", url, "--key", key,
         "--paths", str(paths), "--rate", str(rate), "--seconds", str(seconds)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _passes(r: dict[str, Any], rate: float) -> bool:
    return not r["errors"] and r["p99_ms"] <= 30 and r["achieved_rate"] >= 0.95 * rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--home", type=Path, default=None, help="keep the prepared shop here")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rates", default="300,450,600,800,1200", help="the ramp for the maximum")
    parser.add_argument(
        "--live-rates", default="100,150,200,300", help="the ramp of recommendations_live"
    )
    args = parser.parse_args()
    home = args.home or Path(tempfile.mkdtemp(prefix="shopml-bench-serving-"))
    env = {**os.environ, "SHOPML_HOME": str(home)}
    started = time.perf_counter()
    if not (home / "bucket" / "shopml-search" / "current.json").is_file():
        setup = run_child(SETUP.format(events=args.events), env=env)
        print(f"setup: {setup}", flush=True)
    setup_s = time.perf_counter() - started
    stages = run_child(STAGES.format(cache=str(home / "bench-cache")), env=env)
    print(f"cost per request by stage (ms, one thread): {stages}", flush=True)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    log = (home / "serve-bench.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", "serve", "--port", str(port), "--workers", str(args.workers)],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"the server did not get ready; see {log.name}")
        key = (home / "secrets" / "serving-client.key").read_text().strip()
        paths = _paths(home, home / "bench-paths")
        idle_gb = _rss_gb(server.pid)
        for name in paths:  # warm every worker
            _load(url, key, paths[name], 50, 3)
        results: dict[str, Any] = {}
        for name, file in paths.items():
            runs = []
            ramp = args.live_rates if name == "recommendations_live" else args.rates
            for rate in [float(r) for r in ramp.split(",")]:
                r = _load(
                    url, key, file, rate, args.seconds if rate == 300 else min(args.seconds, 20)
                )
                runs.append(r)
                print(f"{name} at {rate:.0f}/s: {r}", flush=True)
                if not _passes(r, rate):
                    break
            passing = [r["target_rate"] for r in runs if _passes(r, r["target_rate"])]
            results[name] = {"runs": runs, "max_passing_rate": max(passing) if passing else None,
                             "target_300_for_60s": next((_passes(r, 300) for r in runs if r["target_rate"] == 300), None)}  # fmt: skip
        loaded_gb = _rss_gb(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        log.close()
    doc = {
        "events": args.events,
        "workers": args.workers,
        "setup_seconds": round(setup_s, 1),
        "stages": stages,
        "endpoints": results,
        "server_rss_gb": {"ready": idle_gb, "after_load": loaded_gb},
        "home": str(home),
    }
    name = "serving_1m" if args.events == 1_000_000 else f"serving_{args.events}"
    command = f"python benchmarks/bench_serving.py --events {args.events} --workers {args.workers}"
    path = write_result(name, command, doc)
    print(f"wrote {path}")
    for endpoint, r in results.items():
        first = next((x for x in r["runs"] if x["target_rate"] == 300), r["runs"][-1])
        print(f"  {endpoint}: {first['target_rate']:.0f}/s p50 {first['p50_ms']} p95 {first['p95_ms']} "
              f"p99 {first['p99_ms']} ms, errors {first['errors']}; max passing {r['max_passing_rate']}/s")  # fmt: skip


if __name__ == "__main__":
    main()
