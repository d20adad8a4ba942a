"""Real grocery purchases (the Complete Journey sample): ShopML beside every simple baseline.

Target (issue "Recommendations that beat the simple baselines"): nDCG@10 >= 0.061 for the
households with purchases before and after 2017-11-01 (relevant: distinct products bought
on or after; already-bought products allowed; k = 10), and above every simple baseline
ShopML computes on the same split, each with its 95 % bootstrap interval.

    python benchmarks/bench_completejourney.py [--data ../shared/data/completejourney-a]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import run_child, write_result

REPO = Path(__file__).resolve().parents[1]
SCRIPT = """
import logging
logging.basicConfig(level=logging.WARNING)
from pipelines.evaluation.benchmark import completejourney
result = completejourney({data!r}, config={config!r}, mapping={mapping!r})
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default = REPO.parent / "shared" / "data" / "completejourney-a"
    parser.add_argument("--data", type=Path, default=default)
    parser.add_argument("--config", type=Path, default=REPO / "docs/examples/completejourney.toml")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"{args.data}: no Complete Journey sample here; pass --data")
    mapping = REPO / "docs/examples/completejourney.yaml"
    doc = run_child(
        SCRIPT.format(data=str(args.data), config=str(args.config), mapping=str(mapping))
    )
    path = write_result(
        "recommend_completejourney",
        f"python benchmarks/bench_completejourney.py --data {args.data} --config {args.config}",
        doc,
    )
    print(f"Complete Journey, {doc['test_households']:,} test households ({path}):")
    for name, m in doc["metrics"].items():
        d = m.get("shopml_minus_this")
        vs = (
            ""
            if d is None
            else f"   ShopML - this {d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
        )
        print(f"  {name:28s} nDCG@10 {m['ndcg']:.4f} [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}]{vs}")
    print(
        f"  vs best baseline ({doc['best_baseline']['name']}): {doc['shopml_vs_best_baseline']:+.1%}; "
        f"target {doc['target_ndcg']}: {'reached' if doc['reaches_target'] else 'missed'}"
    )


if __name__ == "__main__":
    main()
