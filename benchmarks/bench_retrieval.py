"""FAISS retrieval vs exact scoring on a large catalog: recall of the top 300, the change in
nDCG@10 of the whole re-ranked pipeline, and the time of a batch of requests.

Targets (issue "Recommendations that beat the simple baselines"): recall of the index's
top 300 against the exact top 300 >= 0.95 per source; end-to-end nDCG@10 loss <= 1 %.
The same-run baseline for speed is exact numpy scoring of the same requests by the same
model (the index switched off).

    python benchmarks/bench_retrieval.py [--events 1000000] [--items 50000] [--users 50000]
"""

from __future__ import annotations

import argparse

from common import run_child, write_result

SCRIPT = """
import logging, tempfile, time
logging.basicConfig(level=logging.WARNING)
from datetime import UTC, datetime
from pathlib import Path
import numpy as np
from pipelines.candidates.ann import ItemIndex
from pipelines.candidates.base import approximate_top, top_n
from pipelines.candidates.repeats import banned as seen_banned
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import DAY, load_timeline
from pipelines.evaluation.benchmark import BINARY, K
from pipelines.ranking.metrics import ranking_metrics
from pipelines.recommender.config import TrainConfig
from pipelines.recommender.labels import Labels
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.challenger import train_challenger
from pipelines.settings import load_settings

root = Path(tempfile.mkdtemp(prefix="shopml-bench-retrieval-"))
gen = generate_shop(GeneratorConfig(users={users}, items={items}, events={events}, seed=7), out=root / "shop")
snap = Snapshot.open(gen.path)
last = datetime.fromisoformat(snap.manifest["event_time"]["max"].replace("Z", "+00:00"))
until = datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp() + DAY - 14 * DAY
until = datetime.fromtimestamp(until, tz=UTC)
settings = load_settings({{"SHOPML_HOME": str(root / "home")}})
out = train_challenger(gen.path, settings=settings, cfg=TrainConfig(), until=until)
rec = out.result.recommender
indexed = [n for n, g in rec.generators.items() if g.ann is not None]
tl = load_timeline(snap)
split = tl.before(until.timestamp())
held = Labels.from_events(tl, slice(split, len(tl.ts)), BINARY)
users = held.users()
users = users[np.bincount(tl.user[:split], minlength=tl.n_users)[users] > 0]
users = np.sort(np.random.default_rng(7).permutation(users)[:{requests}])
truth = held.truth(rec.ctx.user_ids, rec.ctx.item_ids, users)
ids = list(rec.ctx.user_ids[users])

def timed(label):
    t = time.perf_counter()
    lists = rec.recommend(RecommendRequest(ids, K))
    return lists, time.perf_counter() - t

with_index, t_index = timed("index")
saved = {{n: rec.generators[n].ann for n in indexed}}
for n in indexed:
    rec.generators[n].ann = None
exact, t_exact = timed("exact")
recall = {{}}
batch = rec.ctx.batch(np.asarray(ids[:2000], dtype=object))
skip = seen_banned(batch.rows, rec.ctx.history.repeat_allowed)
graph_recall = {{}}
for n in indexed:
    g = rec.generators[n]
    want, _ = g.top(batch, 300)
    g.ann = saved[n]
    got, _ = g.top(batch, 300)
    recall[n] = float(np.mean([len(set(a[a >= 0]) & set(w[w >= 0])) / max((w >= 0).sum(), 1) for a, w in zip(got, want)]))
    graph = ItemIndex.build(g.item_vectors(), rec.ctx.history.item_exists, method="hnsw")
    approx, _ = approximate_top(graph, g.query_vectors(batch), g.item_vectors(), 300, skip, rec.ctx.history.item_exists, pool=300)
    graph_recall[n] = float(np.mean([len(set(a[a >= 0]) & set(w[w >= 0])) / max((w >= 0).sum(), 1) for a, w in zip(approx, want)]))
n_index = ranking_metrics(with_index, truth, K)["ndcg"]
n_exact = ranking_metrics(exact, truth, K)["ndcg"]
result = {{
    "events": {events}, "users": {users}, "items": {items}, "requests": len(ids),
    "indexed_sources": indexed, "method": rec.cfg.ann_method,
    "recall_at_300": {{n: round(v, 4) for n, v in recall.items()}},
    "hnsw_recall_at_300": {{n: round(v, 4) for n, v in graph_recall.items()}},
    "ndcg_index": round(n_index, 4), "ndcg_exact": round(n_exact, 4),
    "ndcg_change": round(n_index / max(n_exact, 1e-12) - 1, 4),
    "seconds_index": round(t_index, 1), "seconds_exact": round(t_exact, 1),
    "speedup": round(t_exact / max(t_index, 1e-9), 2),
    "train_seconds": round(out.seconds, 1),
}}
import shutil; shutil.rmtree(root, ignore_errors=True)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--requests", type=int, default=10_000)
    args = parser.parse_args()
    doc = run_child(
        SCRIPT.format(
            events=args.events, items=args.items, users=args.users, requests=args.requests
        )
    )
    doc["targets"] = {"recall_at_300": 0.95, "ndcg_change": -0.01}
    path = write_result(
        "retrieval",
        f"python benchmarks/bench_retrieval.py --events {args.events} --items {args.items} "
        f"--users {args.users} --requests {args.requests}",
        doc,
    )
    print(
        f"retrieval on {args.items:,} items ({path}): sources {', '.join(doc['indexed_sources'])}"
    )
    for name, r in doc["recall_at_300"].items():
        print(
            f"  {name}: recall@300 {r:.4f} ({doc['method']}); HNSW graph {doc['hnsw_recall_at_300'][name]:.4f}"
        )
    print(
        f"  nDCG@10 {doc['ndcg_index']:.4f} with the index vs {doc['ndcg_exact']:.4f} exact ({doc['ndcg_change']:+.2%})"
    )
    print(
        f"  {doc['requests']:,} requests: {doc['seconds_index']:.1f} s vs {doc['seconds_exact']:.1f} s exact ({doc['speedup']:.1f}x)"
    )


if __name__ == "__main__":
    main()
