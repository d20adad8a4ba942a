"""Validation and feature-store benchmark on a generated shop (default 10M events).

Targets (issue "Data validation ... feature store"), on 2 cores:
- validating 10M events <= 2 min;
- building the features of 10M events <= 5 min with peak memory <= 8 GB;
- online lookup of one user's features (SQLite) p99 <= 5 ms.

Each step runs in a fresh process that reports its own peak memory. Same-run baselines:
reading the snapshot's tables into pandas (the floor under validation), one grouped
count over all events (the floor under a feature build), and a raw SQLite read of one
online row (the floor under a Feast lookup).

    python benchmarks/bench_features.py [--events 10000000] [--workdir /tmp/shopml-bench]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import run_child, write_result

SHAPE = {10_000_000: (500_000, 50_000), 1_000_000: (50_000, 10_000)}
TARGETS = {
    "validate_seconds": 120.0,
    "features_seconds": 300.0,
    "features_peak_rss_gb": 8.0,
    "online_p99_ms": 5.0,
}

GENERATE = """
from pipelines.data.generator import GeneratorConfig, generate_shop
r = generate_shop(GeneratorConfig(users={users}, items={items}, events={events}, seed=42), out={out!r})
result = {{"seconds": r.seconds, "rows": r.rows}}
"""
READ_FLOOR = """
import time
from pipelines.data.snapshot import Snapshot
from pipelines.validation.validate import load_frames
t = time.perf_counter(); frames = load_frames(Snapshot.open({snap!r}))
result = {{"seconds": time.perf_counter() - t, "rows": {{k: len(v) for k, v in frames.items()}}}}
"""
VALIDATE = """
import time
from pipelines.validation.validate import validate_snapshot
t = time.perf_counter(); r = validate_snapshot(snapshot_uri={snap!r})
result = {{"seconds": time.perf_counter() - t, "accepted": r.accepted, "checks": len(r.checks)}}
"""
GROUP_FLOOR = """
import time, numpy as np
from pipelines.data.timeline import load_timeline
from pipelines.data.snapshot import Snapshot
t = time.perf_counter(); tl = load_timeline(Snapshot.open({snap!r}))
counts = np.bincount(tl.user * 4 + tl.etype, minlength=tl.n_users * 4)
result = {{"seconds": time.perf_counter() - t}}
"""
FEATURES = """
import time
from pipelines.features import FeatureConfig, build_features
from pipelines.features.store import open_store, materialize
from pipelines.settings import load_settings
s = load_settings()
t = time.perf_counter(); b = build_features(snapshot_uri={snap!r}, out_dir=s.feature_store_dir, cfg=FeatureConfig())
build_s = time.perf_counter() - t
open_store(s, apply=True)
t = time.perf_counter(); materialize(s); mat_s = time.perf_counter() - t
result = {{"seconds": build_s, "materialize_seconds": mat_s, "rows": b.rows, "times": len(b.times), "segments_k": b.segments["k"]}}
"""
ONLINE = """
import sqlite3, time, numpy as np, pandas as pd
from pipelines.features.store import open_store, VIEWS
from pipelines.settings import load_settings
s = load_settings(); store = open_store(s)
refs = [f"user_profile:{{f.name}}" for f in VIEWS["user_profile"].features]
users = pd.read_parquet(s.feature_store_dir / "data" / "user_profile.parquet", columns=["user_id"])["user_id"].unique()
rng = np.random.default_rng(0); picks = rng.choice(users, 1000)
for u in picks[:50]:  # warm up
    store.get_online_features(features=refs, entity_rows=[{{"user_id": u}}]).to_dict()
lat = []
for u in picks:
    t = time.perf_counter(); store.get_online_features(features=refs, entity_rows=[{{"user_id": u}}]).to_dict(); lat.append(time.perf_counter() - t)
con = sqlite3.connect(s.feature_store_dir / "online.db"); keys = [r[0] for r in con.execute("select entity_key from shopml_user_profile limit 1000")]
raw = []
for k in keys:
    t = time.perf_counter(); con.execute("select feature_name, value from shopml_user_profile where entity_key = ?", (k,)).fetchall(); raw.append(time.perf_counter() - t)
lat, raw = np.array(lat) * 1e3, np.array(raw) * 1e3
result = {{"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)), "features": len(refs),
          "raw_sqlite_p50_ms": float(np.percentile(raw, 50)), "raw_sqlite_p99_ms": float(np.percentile(raw, 99))}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workdir", default="/tmp/shopml-bench")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    users, items = SHAPE.get(
        args.events, (max(args.events // 20, 1000), max(args.events // 100, 200))
    )
    work = Path(args.workdir)
    snap = work / f"shop-{args.events}"
    env = {"SHOPML_HOME": str(work / "home")}
    shutil.rmtree(work / "home", ignore_errors=True)
    if not (snap / "manifest.json").is_file():
        shutil.rmtree(snap, ignore_errors=True)
        run_child(GENERATE.format(users=users, items=items, events=args.events, out=str(snap)))
    shutil.rmtree(snap / "validation", ignore_errors=True)

    floor_read = run_child(READ_FLOOR.format(snap=str(snap)))
    validate = run_child(VALIDATE.format(snap=str(snap)), env)
    floor_group = run_child(GROUP_FLOOR.format(snap=str(snap)))
    features = run_child(FEATURES.format(snap=str(snap)), env)
    online = run_child(ONLINE.format(), env)

    figures = {
        "events": args.events, "users": users, "items": items,
        "validate_seconds": round(validate["seconds"], 1), "validate_peak_rss_gb": round(validate["peak_rss_gb"], 2),
        "validate_checks": validate["checks"], "validate_accepted": validate["accepted"],
        "read_floor_seconds": round(floor_read["seconds"], 1),
        "validate_ratio_to_read_floor": round(validate["seconds"] / floor_read["seconds"], 2),
        "features_seconds": round(features["seconds"], 1), "features_peak_rss_gb": round(features["peak_rss_gb"], 2),
        "features_rows": features["rows"], "feature_times": features["times"], "segments_k": features["segments_k"],
        "group_floor_seconds": round(floor_group["seconds"], 1),
        "features_ratio_to_group_floor": round(features["seconds"] / floor_group["seconds"], 2),
        "materialize_seconds": round(features["materialize_seconds"], 1),
        "online_p50_ms": round(online["p50_ms"], 3), "online_p99_ms": round(online["p99_ms"], 3),
        "online_features": online["features"],
        "raw_sqlite_p99_ms": round(online["raw_sqlite_p99_ms"], 3),
        "online_ratio_to_raw_sqlite_p99": round(online["p99_ms"] / online["raw_sqlite_p99_ms"], 1),
    }  # fmt: skip
    met = {k: figures[k] <= v for k, v in TARGETS.items()}
    figures["targets"] = TARGETS
    figures["meets_targets"] = met
    for key, value in figures.items():
        print(f"{key:>32}: {value}")
    path = write_result(
        "features",
        f"python benchmarks/bench_features.py --events {args.events}",
        figures,
        Path(args.out) if args.out else None,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
