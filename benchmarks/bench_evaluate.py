"""Offline evaluation: time and memory of `shopml evaluate`, and the figures it reports.

For a generated shop (default 1M events) and the MovieLens-100K import, each step in a
fresh process: train (holding out the evaluation window), then evaluate with a champion
(the same model again: the cost of scoring two models). The baseline measured in the same
run is the bare `recommend` call for the evaluation users, the floor of any evaluation;
the ratio says what freezing, metrics, slices, bootstrap, report and MLflow logging add.

    python benchmarks/bench_evaluate.py [--events 1000000] [--movielens ../shared/data/movielens-100k]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from common import run_child, write_result

TRAIN = """
import logging, time
logging.basicConfig(level=logging.WARNING)
from dataclasses import replace
from pathlib import Path
from pipelines.evaluation.evalset import EvalConfig
from pipelines.settings import load_settings
from pipelines.recommender.config import TrainConfig
from pipelines.registry.challenger import train_challenger
root = Path({root!r})
if {movielens!r}:
    from pipelines.data.importers.movielens import import_movielens_100k
    import_movielens_100k(Path({movielens!r}), out=root / "shop")
    base = TrainConfig()
    cfg = replace(base, ranker=replace(base.ranker, label_days=30.0), holdout_days=28)
else:
    from pipelines.data.generator import GeneratorConfig, generate_shop
    generate_shop(GeneratorConfig(users={users}, items={items}, events={events}, seed=7), out=root / "shop")
    cfg = TrainConfig()
t = time.perf_counter()
o = train_challenger(root / "shop", settings=load_settings({{"SHOPML_HOME": str(root / "home")}}), cfg=cfg)
result = {{"train_seconds": time.perf_counter() - t, "version": o.version}}
"""
EVALUATE = """
import logging, time
logging.basicConfig(level=logging.WARNING)
from pathlib import Path
from pipelines.evaluation.evalset import EvalConfig, freeze_eval_set
from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import load_recommender
from pipelines.settings import load_settings
root = Path({root!r})
settings = load_settings({{"SHOPML_HOME": str(root / "home")}})
ecfg = EvalConfig(holdout_days={holdout})
uri = "models:/shopml-recommender/{version}"
t = time.perf_counter()
es = freeze_eval_set(root / "shop", ecfg)
freeze = time.perf_counter() - t
rec = load_recommender(uri, settings)
t = time.perf_counter()
rec.recommend(RecommendRequest(es.users["user_id"].tolist(), ecfg.max_k, age=es.users["age"].tolist(),
              gender=es.users["gender"].tolist(), region=es.users["region"].tolist()))
bare = time.perf_counter() - t
del rec
t = time.perf_counter()
r = evaluate(model_uri=uri, snapshot_uri=root / "shop", settings=settings,
             cfg=EvaluateConfig(evaluate=ecfg), champion_uri=uri)
total = time.perf_counter() - t
import json
doc = json.loads((r.out_dir / "metrics.json").read_text())
k = ecfg.headline_k
result = {{
    "freeze_seconds": freeze, "bare_recommend_seconds": bare, "evaluate_seconds": total,
    "challenger_scoring_seconds": r.challenger.seconds, "users": len(es.users),
    "new_users": int(es.users["new"].sum()), "truth_rows": len(es.truth),
    "blessed": r.blessed, "reasons": [o.reason for o in r.judgement.outcomes],
    "challenger": {{m: r.challenger.values["all"][f"{{m}}@{{k}}"] for m in
                   ("ndcg", "recall", "precision", "map", "hit_rate", "mrr", "coverage", "novelty", "ild")}},
    "popularity": {{m: r.popularity.values["all"][f"{{m}}@{{k}}"] for m in
                   ("ndcg", "recall", "precision", "map", "hit_rate", "mrr", "coverage", "novelty", "ild")}},
    "ndcg_interval": doc["challenger"]["intervals"]["all"][f"ndcg@{{k}}"],
    "slice_users": doc["challenger"]["slice_users"],
    "report": str(r.out_dir / "report.html"),
}}
"""


def _bench(name: str, root: Path, holdout: float, **train_args: object) -> dict[str, object]:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    trained = run_child(TRAIN.format(root=str(root), **train_args))
    evaluated = run_child(
        EVALUATE.format(root=str(root), holdout=holdout, version=trained["version"])
    )
    rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in evaluated.items()}
    for part in ("challenger", "popularity", "ndcg_interval"):
        rounded[part] = {k: round(v, 4) for k, v in evaluated[part].items()}
    rounded["train_seconds"] = round(trained["train_seconds"], 1)
    rounded["evaluate_vs_bare_recommend"] = round(
        evaluated["evaluate_seconds"] / max(evaluated["bare_recommend_seconds"], 1e-9), 2
    )
    print(f"{name}: {rounded}")
    return rounded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--movielens", type=Path, default=Path("../shared/data/movielens-100k"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shopml-bench-evaluate"))
    args = parser.parse_args()
    users, items = args.events // 20, min(50_000, args.events // 200)
    payload: dict[str, object] = {"events": args.events, "users": users, "items": items}
    payload["synthetic"] = _bench(
        "synthetic",
        args.workdir / str(args.events),
        7.0,
        movielens="",
        users=users,
        items=items,
        events=args.events,
    )
    if args.movielens.is_dir():
        payload["movielens"] = _bench(
            "movielens",
            args.workdir / "movielens",
            28.0,
            movielens=str(args.movielens.resolve()),
            users=0,
            items=0,
            events=0,
        )
    command = f"python benchmarks/bench_evaluate.py --events {args.events}"
    path = write_result(f"evaluate_{args.events // 1_000_000}m", command, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
