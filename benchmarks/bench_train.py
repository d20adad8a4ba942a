"""Training peak memory and batch-recommend speed at one size, each step in a fresh process.

`bench_recommend.py` measures quality, and its peak memory covers training plus the
evaluation that follows; this script isolates the two numbers the targets name:
- peak memory of the whole `shopml train` (target <= 12 GB at 10M events);
- batch recommend of 100,000 users from the registered bundle (target <= 60 s).

    python benchmarks/bench_train.py [--events 10000000] [--workdir /tmp/shopml-bench-train]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import run_child, write_result

TRAIN = """
import logging, time
logging.basicConfig(level=logging.WARNING)
from datetime import UTC, datetime
from pathlib import Path
from pipelines.data.timeline import DAY
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.settings import load_settings
from pipelines.data.snapshot import Snapshot
from pipelines.registry.challenger import train_challenger
root = Path({root!r})
if not (root / "shop").exists():
    generate_shop(GeneratorConfig(users={users}, items={items}, events={events}, seed=7), out=root / "shop")
snap = Snapshot.open(root / "shop")
last = datetime.fromisoformat(snap.manifest["event_time"]["max"].replace("Z", "+00:00"))
end = datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp() + DAY
until = datetime.fromtimestamp(end - 14 * DAY, tz=UTC)
t = time.perf_counter()
o = train_challenger(root / "shop", settings=load_settings({{"SHOPML_HOME": str(root / "home")}}), until=until)
result = {{"train_seconds": time.perf_counter() - t, "steps": o.result.seconds, "version": o.version}}
"""
RECOMMEND = """
import logging, time
import numpy as np
logging.basicConfig(level=logging.WARNING)
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import load_recommender
from pipelines.settings import load_settings
rec = load_recommender("models:/shopml-recommender/{version}", load_settings({{"SHOPML_HOME": {home!r}}}))
users = rec.ctx.user_ids[np.random.default_rng(7).permutation(len(rec.ctx.user_ids))[:100_000]]
t = time.perf_counter()
out = rec.recommend(RecommendRequest(list(users), 10))
result = {{"recommend_seconds": time.perf_counter() - t, "users": len(users), "rows": len(out)}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shopml-bench-train"))
    args = parser.parse_args()
    users, items = args.events // 20, min(50_000, args.events // 200)
    root = args.workdir / str(args.events)
    shutil.rmtree(root, ignore_errors=True)
    trained = run_child(TRAIN.format(root=str(root), users=users, items=items, events=args.events))
    served = run_child(RECOMMEND.format(version=trained["version"], home=str(root / "home")))
    payload = {
        "events": args.events,
        "users": users,
        "items": items,
        "train_seconds": round(trained["train_seconds"], 1),
        "train_steps_seconds": {k: round(v, 1) for k, v in trained["steps"].items()},
        "train_peak_rss_gb": round(trained["peak_rss_gb"], 2),
        "recommend_users": served["users"],
        "recommend_seconds": round(served["recommend_seconds"], 1),
        "recommend_peak_rss_gb": round(served["peak_rss_gb"], 2),
        "targets": {"train_peak_rss_gb": 12.0, "recommend_seconds": 60.0},
    }
    path = write_result(
        f"train_{args.events // 1_000_000}m",
        f"python benchmarks/bench_train.py --events {args.events}",
        payload,
    )
    print(
        f"train {payload['train_seconds']:.0f} s, peak {payload['train_peak_rss_gb']:.1f} GB; "
        f"recommend {served['users']:,} users {payload['recommend_seconds']:.1f} s ({path})"
    )
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
