"""Recommendation quality and training-speed benchmarks.

Targets (issue "Recommendation models"), on 2 cores:
- MovieLens-100K under Microsoft Recommenders' protocol: the re-ranked pipeline
  >= 0.50 nDCG@10 and above every single generator;
- generated shop, last 14 days held out: re-ranked >= +10 % nDCG@10 over the best single
  generator; cold-start users >= +10 % over global popularity;
- the whole `shopml train` on 1M events <= 3 min, on 10M <= 20 min, peak memory <= 12 GB,
  cost about linear in events; batch recommend for 100k users <= 60 s.

Each run is a fresh process that reports its own peak memory. The same-run baseline for
speed is the generator of the same shop (events per second written).

    python benchmarks/bench_recommend.py [--movielens DIR] [--events 1000000 10000000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import run_child, write_result

TARGETS = {
    "movielens_ndcg": 0.50,
    "pipeline_vs_best_single": 0.10,
    "cold_start_vs_global_popularity": 0.10,
    "train_seconds": {1_000_000: 180.0, 10_000_000: 1200.0},
    "peak_rss_gb": 12.0,
    "recommend_seconds_100k": 60.0,
}
MOVIELENS = """
import logging
logging.basicConfig(level=logging.WARNING)
from pipelines.evaluation.benchmark import movielens
result = movielens({data!r})
"""
SYNTHETIC = """
import logging
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
for name in ("great_expectations", "feast", "alembic", "mlflow", "pipelines.features.build"):
    logging.getLogger(name).setLevel(logging.WARNING)
from pipelines.evaluation.benchmark import synthetic
result = synthetic({events}, recommend_users=100_000)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_ml = Path(__file__).resolve().parents[2] / "shared" / "data" / "movielens-100k"
    parser.add_argument("--movielens", type=Path, default=default_ml)
    parser.add_argument("--events", type=int, nargs="*", default=[1_000_000])
    args = parser.parse_args()

    if args.movielens.is_dir():
        ml = run_child(MOVIELENS.format(data=str(args.movielens)))
        ml["targets"] = {"ndcg": TARGETS["movielens_ndcg"]}
        path = write_result(
            "recommend_movielens",
            f"python benchmarks/bench_recommend.py --movielens {args.movielens}",
            ml,
        )
        print(f"MovieLens-100K ({path}):")
        for name, m in ml["metrics"].items():
            print(
                f"  {name:20s} nDCG@10 {m['ndcg']:.4f}  P@10 {m['precision']:.4f}  R@10 {m['recall']:.4f}  MAP@10 {m['map']:.4f}"
            )
        print(
            f"  vs best single ({ml['best_single']['name']}): {ml['pipeline_vs_best_single']:+.1%}"
        )
        print(f"  repeat policy resolved to: {ml['repeats']['resolved']}")
    else:
        print(f"MovieLens-100K not found at {args.movielens}: skipped")

    for events in args.events:
        doc = run_child(SYNTHETIC.format(events=events))
        doc["train_events_per_second"] = round(events / doc["train_seconds"])
        doc["generator_events_per_second"] = round(events / doc["generate_seconds"])
        doc["targets"] = {
            "train_seconds": TARGETS["train_seconds"].get(events),
            "peak_rss_gb": TARGETS["peak_rss_gb"],
            "recommend_seconds_100k": TARGETS["recommend_seconds_100k"],
            "pipeline_vs_best_single": TARGETS["pipeline_vs_best_single"],
            "cold_start_vs_global_popularity": TARGETS["cold_start_vs_global_popularity"],
        }
        path = write_result(
            f"recommend_synthetic_{events // 1_000_000}m"
            if events >= 1_000_000
            else f"recommend_synthetic_{events}",
            f"python benchmarks/bench_recommend.py --events {events}",
            doc,
        )
        print(f"synthetic {events:,} events ({path}):")
        print(
            f"  train {doc['train_seconds']:.0f} s ({doc['train_events_per_second']:,} events/s), peak {doc['peak_rss_gb']:.1f} GB"
        )
        print(
            f"  re-ranked vs best single ({doc['best_single']['name']}): {doc['pipeline_vs_best_single']:+.1%}"
        )
        print(
            f"  graded relevance (purchase 3, cart 2, view 1): vs best single "
            f"({doc['best_single_graded']['name']}): {doc['pipeline_vs_best_single_graded']:+.1%}"
        )
        print(f"  cold start vs global popularity: {doc['cold_start_vs_global_popularity']:+.1%}")
        print(f"  recommend {doc['recommend_users']:,} users: {doc['recommend_seconds']:.1f} s")


if __name__ == "__main__":
    main()
