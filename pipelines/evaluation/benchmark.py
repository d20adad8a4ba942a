"""Recommendation quality benchmarks: ``shopml benchmark movielens`` and ``... synthetic``.

MovieLens-100K follows Microsoft Recommenders' protocol: a per-user stratified 75/25
split exactly as their ``python_stratified_split`` (each user's ratings shuffled with
``random_state=42``, the first ``round(0.75 n)`` for training), every rating a relevant
item (binary), k = 10, items seen in training removed. The ranker learns inside the
training 75 % only, from K folds: each user's training ratings are dealt into K parts;
fold f fits the generators on the other parts and labels candidates with part f.

The synthetic benchmark generates a shop, holds out its last ``holdout_days``, runs the
whole ``shopml train`` up to that point (validation, features, generators, ranker,
MLflow registration) and scores the next days' interactions: the re-ranked pipeline vs
each single generator for returning users, and vs global popularity for cold-start users
(no events before the split, demographics known).
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.candidates import CandidateConfig
from pipelines.candidates.base import Context, shared_top
from pipelines.candidates.repeats import banned as seen_banned
from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.data.importers.movielens import import_movielens_100k
from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import DAY, load_timeline
from pipelines.ranking.metrics import ranking_metrics
from pipelines.recommender.bundle import FeatureSource
from pipelines.recommender.config import RankerConfig, TrainConfig
from pipelines.recommender.labels import Labels
from pipelines.recommender.predict import RecommendRequest
from pipelines.recommender.train import Fold, candidate_stage, ranker_stage
from pipelines.registry.challenger import train_challenger
from pipelines.settings import load_settings

log = logging.getLogger(__name__)
K = 10
BINARY = {"purchase": 1, "add_to_cart": 1, "view": 1, "search_click": 1}

# Parameters for MovieLens-100K (a small, dense catalog where every rating counts the
# same): fewer ALS factors with stronger regularisation, BPR stopped early, no time
# decay (the protocol's split is random in time). Chosen on the training folds.
MOVIELENS_CANDIDATES = CandidateConfig(
    event_weights=dict.fromkeys(("view", "add_to_cart", "purchase", "search_click"), 1.0),
    half_life_days=100_000.0,
    als_factors=16,
    als_regularization=1.0,
    als_alpha=2.0,  # confidence 1 + 2 = 3 per rating
    bpr_factors=200,
    bpr_learning_rate=0.01,
    bpr_regularization=0.001,
    bpr_iterations=50,
    ease_lambda=400.0,
)
MOVIELENS_RANKER = RankerConfig(
    grades=BINARY, num_leaves=15, min_data_in_leaf=200, validation_share=0.2, negatives_per_user=300
)  # every candidate kept: 943 users are few enough


def machine() -> dict[str, Any]:
    """Cores, memory, CPU model and Python of this machine, for benchmark results."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    return {
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "cpu": cpu,
        "python": platform.python_version(),
    }


def stratified_split(users: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Microsoft Recommenders' ``python_stratified_split`` on rows in file order: a mask
    of the rows that go to the first part."""
    frame = pd.DataFrame({"user": users, "row": np.arange(len(users))})
    first = []
    for _, group in frame.groupby("user", sort=True):
        shuffled = group.sample(frac=1, random_state=seed)
        first.append(shuffled["row"].to_numpy()[: round(ratio * len(group))])
    mask = np.zeros(len(users), dtype=bool)
    mask[np.concatenate(first)] = True
    return mask


def deal_folds(users: np.ndarray, rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Deal each user's ``rows`` into ``k`` folds at random (fold per row, -1 elsewhere)."""
    rng = np.random.default_rng(seed)
    fold = np.full(len(users), -1, dtype=np.int64)
    frame = pd.DataFrame({"user": users[rows], "row": rows})
    for _, group in frame.groupby("user", sort=True):
        shuffled = rng.permutation(group["row"].to_numpy())
        fold[shuffled] = np.arange(len(shuffled)) % k
    return fold


def global_popularity(ctx: Context, users: np.ndarray, k: int) -> pd.DataFrame:
    """The k most popular existing items for each user (no personalisation), minus what
    they touched that may not be shown again."""
    pop = ctx.history.popularity.astype(np.float32)[None, :]
    batch = ctx.batch(ctx.user_ids[users])
    # one ranked list shared by everyone (a dense users x items copy is 4 GB at 20k x 50k)
    group = np.zeros(len(users), dtype=np.int64)
    banned = seen_banned(batch.rows, ctx.history.repeat_allowed)
    idx = shared_top(group, pop, k, banned, ctx.history.item_exists)
    b, r = np.nonzero(idx >= 0)
    return pd.DataFrame(
        {"user_id": ctx.user_ids[users[b]], "rank": r + 1, "item_id": ctx.item_ids[idx[b, r]]}
    )


def repeat_summary(rec: Any) -> dict[str, Any]:
    """What the repeat policy of a trained model resolved to: the mode and, per top-level
    category, allowed or never (MovieLens must come out never everywhere)."""
    repeats = rec.ctx.history.repeats
    if repeats is None:
        return {"resolved": "never", "categories": {}}
    cats = {c: p["repeats"] for c, p in repeats.policy.items()}
    allowed = sum(v == "allowed" for v in cats.values())
    resolved = "never" if allowed == 0 else ("allowed" if allowed == len(cats) else "mixed")
    return {
        "mode": rec.cfg.repeats,
        "resolved": resolved,
        "allowed_items": int(repeats.allowed.sum()),
        "categories": cats,
    }


def _rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {m: round(v, 4) for m, v in metrics.items()}


def movielens(
    data_dir: str | Path,
    *,
    folds: int = 5,
    cand_cfg: CandidateConfig = MOVIELENS_CANDIDATES,
    ranker_cfg: RankerConfig = MOVIELENS_RANKER,
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """The MovieLens-100K benchmark (module docstring); returns the results document."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="shopml-ml100k-", dir=work_dir) as tmp:
        snap_dir = Path(tmp) / "snapshot"
        import_movielens_100k(data_dir, out=snap_dir)
        tl = load_timeline(Snapshot.open(snap_dir))
    n = len(tl.ts)
    file_to_sorted = np.empty(n, dtype=np.int64)
    file_to_sorted[tl.order] = np.arange(n)
    users_file = tl.user[file_to_sorted]  # user code per events.parquet row (file order)
    train_file = stratified_split(users_file, 0.75, seed=42)
    fold_file = deal_folds(users_file, np.flatnonzero(train_file), folds, seed=ranker_cfg.seed)
    train_mask, fold_of = train_file[tl.order], fold_file[tl.order]
    now = float(tl.ts.max()) + 1.0
    fold_list = [Fold(train_mask & (fold_of != f), now, fold_of == f) for f in range(folds)]
    t0 = time.perf_counter()
    stage = candidate_stage(
        tl, folds=fold_list, final=(train_mask, now), cand_cfg=cand_cfg, ranker_cfg=ranker_cfg,
        source=FeatureSource(),
    )  # fmt: skip
    result = ranker_stage(stage, ranker_cfg)
    train_seconds = time.perf_counter() - t0
    rec = result.recommender
    test = Labels.from_events(tl, ~train_mask, BINARY)
    users = test.users()
    truth = test.truth(rec.ctx.user_ids, rec.ctx.item_ids, users)
    scores: dict[str, dict[str, float]] = {}
    scores["global popularity"] = _rounded(
        ranking_metrics(global_popularity(rec.ctx, users, K), truth, K)
    )
    for name, lists in rec.source_lists(RecommendRequest(list(rec.ctx.user_ids[users]), K)).items():
        scores[name] = _rounded(ranking_metrics(lists, truth, K))
    reranked = rec.recommend(RecommendRequest(rec.ctx.user_ids[users], K))
    scores["re-ranked pipeline"] = _rounded(ranking_metrics(reranked, truth, K))
    best_single = max((v["ndcg"], n) for n, v in scores.items() if n != "re-ranked pipeline")
    return {
        "benchmark": "movielens-100k",
        "protocol": "Microsoft Recommenders python_stratified_split(ratio=0.75, seed=42), k=10, "
        "seen items removed, every test rating relevant",
        "k": K,
        "train_events": int(train_mask.sum()),
        "test_events": int((~train_mask).sum()),
        "test_users": len(users),
        "folds": folds,
        "metrics": scores,
        "best_single": {"name": best_single[1], "ndcg": best_single[0]},
        "pipeline_vs_best_single": round(
            scores["re-ranked pipeline"]["ndcg"] / best_single[0] - 1, 4
        ),
        "target_ndcg": 0.50,
        "repeats": repeat_summary(rec),
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
        "ranker": {k: round(v, 4) for k, v in result.metrics.items()},
    }


def synthetic(
    events: int,
    *,
    users: int | None = None,
    items: int | None = None,
    holdout_days: float = 14.0,
    seed: int = 7,
    recommend_users: int = 100_000,
    work_dir: Path | None = None,
    keep: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The synthetic-shop benchmark (module docstring); returns the results document."""
    started = time.perf_counter()
    tmp_root = Path(tempfile.mkdtemp(prefix="shopml-bench-rec-", dir=work_dir))
    home = tmp_root / "home"
    settings = load_settings({"SHOPML_HOME": str(home)})
    users = users or max(2_000, events // 20)
    items = items or max(500, min(50_000, events // 200))
    gcfg = GeneratorConfig(users=users, items=items, events=events, seed=seed)
    t0 = time.perf_counter()
    gen = generate_shop(gcfg, out=tmp_root / "snapshot")
    generate_seconds = time.perf_counter() - t0
    snap = Snapshot.open(gen.path)
    last = datetime.fromisoformat(snap.manifest["event_time"]["max"].replace("Z", "+00:00"))
    end_day = datetime(last.year, last.month, last.day, tzinfo=UTC).timestamp() + DAY
    until = datetime.fromtimestamp(end_day - holdout_days * DAY, tz=UTC)

    outcome = train_challenger(
        gen.path, settings=settings, cfg=TrainConfig(), until=until, progress=progress
    )
    rec = outcome.result.recommender
    tl = load_timeline(snap)
    split = tl.before(until.timestamp())
    held = Labels.from_events(tl, slice(split, len(tl.ts)), BINARY)
    graded = Labels.from_events(tl, slice(split, len(tl.ts)), RankerConfig().grades)
    test_users = held.users()
    history_events = np.bincount(tl.user[:split], minlength=tl.n_users)
    returning = test_users[history_events[test_users] > 0]
    cold = test_users[history_events[test_users] == 0]
    sample = np.random.default_rng(seed)
    returning = np.sort(sample.permutation(returning)[:20_000])
    cold = np.sort(sample.permutation(cold)[:20_000])
    results: dict[str, Any] = {}
    for label, group in (("returning users", returning), ("cold-start users", cold)):
        lists = {"global popularity": global_popularity(rec.ctx, group, K)}
        if label == "returning users":
            lists.update(rec.source_lists(RecommendRequest(list(rec.ctx.user_ids[group]), K)))
        lists["re-ranked pipeline"] = rec.recommend(RecommendRequest(rec.ctx.user_ids[group], K))
        binary_truth = held.truth(rec.ctx.user_ids, rec.ctx.item_ids, group)
        graded_truth = graded.truth(rec.ctx.user_ids, rec.ctx.item_ids, group, graded=True)
        results[label] = {
            "users": len(group),
            "metrics": {n: _rounded(ranking_metrics(r, binary_truth, K)) for n, r in lists.items()},
            "metrics_graded": {
                n: _rounded(ranking_metrics(r, graded_truth, K)) for n, r in lists.items()
            },
        }
    ret = results["returning users"]["metrics"]
    best = max((v["ndcg"], n) for n, v in ret.items() if n != "re-ranked pipeline")
    cold_scores = results["cold-start users"]["metrics"]
    graded_ret = results["returning users"]["metrics_graded"]
    best_graded = max((v["ndcg"], n) for n, v in graded_ret.items() if n != "re-ranked pipeline")

    # ``recommend_users`` requests for users drawn at random (with repeats when the shop
    # has fewer users), known and cold-start alike.
    n_rec = recommend_users
    draw = np.random.default_rng(seed)
    picks = (
        draw.permutation(tl.n_users)[:n_rec]
        if n_rec <= tl.n_users
        else draw.integers(0, tl.n_users, size=n_rec)
    )
    batch_users = rec.ctx.user_ids[picks]
    t0 = time.perf_counter()
    rec.recommend(RecommendRequest(list(batch_users), K))
    recommend_seconds = time.perf_counter() - t0
    doc = {
        "benchmark": "synthetic",
        "events": events,
        "users": users,
        "items": items,
        "seed": seed,
        "holdout_days": holdout_days,
        "train_until": until.isoformat(),
        "k": K,
        "generate_seconds": round(generate_seconds, 1),
        "train_seconds": round(outcome.seconds, 1),
        "train_steps_seconds": {k: round(v, 1) for k, v in outcome.result.seconds.items()},
        "model_version": outcome.version,
        "results": results,
        "best_single": {"name": best[1], "ndcg": best[0]},
        "pipeline_vs_best_single": round(
            ret["re-ranked pipeline"]["ndcg"] / max(best[0], 1e-12) - 1, 4
        ),
        "best_single_graded": {"name": best_graded[1], "ndcg": best_graded[0]},
        "pipeline_vs_best_single_graded": round(
            graded_ret["re-ranked pipeline"]["ndcg"] / max(best_graded[0], 1e-12) - 1, 4
        ),
        "cold_start_vs_global_popularity": round(
            cold_scores["re-ranked pipeline"]["ndcg"]
            / max(cold_scores["global popularity"]["ndcg"], 1e-12)
            - 1,
            4,
        ),
        "repeats": repeat_summary(rec),
        "recommend_users": n_rec,
        "recommend_seconds": round(recommend_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not keep:
        import shutil

        shutil.rmtree(tmp_root, ignore_errors=True)
    else:
        doc["work_dir"] = str(tmp_root)
    return doc


CJ_CUTOFF = datetime(2017, 11, 1, tzinfo=UTC)
CJ_TARGET = 0.061  # +15 % over buy-again + popularity (0.0530, the data's reference script)


def completejourney(
    data_dir: str | Path,
    *,
    config: str | Path,
    mapping: str | Path,
    work_dir: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """The Complete Journey benchmark: import with ``mapping``, validate and ``shopml
    train`` with ``config`` until 2017-11-01, then ``shopml evaluate`` on the window from
    2017-11-01 with re-bought items counted. The protocol's test households (purchases
    before and after the cutoff) are the evaluation's ``returning_users`` slice; every
    simple baseline is scored on the same rows, each figure with its bootstrap interval
    and the paired difference to ShopML."""
    from dataclasses import replace

    from pipelines.data.importers.mapping import import_mapped
    from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
    from pipelines.evaluation.scoring import intervals
    from pipelines.recommender.config import TrainConfig
    from pipelines.registry.models import MODEL_NAME
    from pipelines.validation.config import ValidationConfig
    from pipelines.validation.validate import validate_snapshot

    started = time.perf_counter()
    tmp_root = Path(tempfile.mkdtemp(prefix="shopml-bench-cj-", dir=work_dir))
    try:
        settings = load_settings({"SHOPML_HOME": str(tmp_root / "home")})
        imported = import_mapped(Path(mapping), out=tmp_root / "snapshot", base_dir=Path(data_dir))
        report = validate_snapshot(
            snapshot_uri=imported.path, cfg=ValidationConfig.from_toml(config)
        )
        if not report.accepted:
            raise RuntimeError(
                f"the imported snapshot failed validation: {report.failed[0].summary}"
            )
        t0 = time.perf_counter()
        outcome = train_challenger(
            imported.path,
            settings=settings,
            cfg=TrainConfig.from_toml(config),
            until=CJ_CUTOFF,
            progress=progress,
        )
        train_seconds = time.perf_counter() - t0
        ecfg = EvaluateConfig.from_toml(config)
        # the protocol counts every re-bought product, whatever the repeat policy says
        ecfg = replace(ecfg, evaluate=replace(ecfg.evaluate, repeats="allowed"))
        result = evaluate(
            model_uri=f"models:/{MODEL_NAME}/{outcome.version}",
            snapshot_uri=imported.path,
            settings=settings,
            cfg=ecfg,
            use_champion=False,
            log_to_mlflow=False,
            out_dir=tmp_root / "evaluation",
        )
    finally:
        import shutil

        shutil.rmtree(tmp_root, ignore_errors=True)
    es, cmp, cfg = result.eval_set, result.comparison, ecfg.evaluate
    if es.start != CJ_CUTOFF:
        raise RuntimeError(f"the evaluation window starts {es.start}, not {CJ_CUTOFF}")
    key, part = f"ndcg@{K}", "returning_users"
    models = {"ShopML": cmp.challenger, **cmp.baselines}

    def figure(name: str) -> dict[str, Any]:
        s = models[name]
        own = intervals(s, cfg, slices=(part,))[(part, key)]
        doc: dict[str, Any] = {
            "ndcg": round(s.values[part][key], 4),
            "ci": [round(own.low, 4), round(own.high, 4)],
            "recall": round(s.values[part][f"recall@{K}"], 4),
            "hit_rate": round(s.values[part][f"hit_rate@{K}"], 4),
            "all_users_ndcg": round(s.values["all"][key], 4),
        }
        if name != "ShopML":
            diff = intervals(cmp.challenger, cfg, s, slices=(part,))[(part, key)]
            doc["shopml_minus_this"] = {
                "mean": round(diff.mean, 4),
                "ci": [round(diff.low, 4), round(diff.high, 4)],
            }
        return doc

    figures = {name: figure(name) for name in models}
    best = max((v["ndcg"], n) for n, v in figures.items() if n != "ShopML")
    shopml = figures["ShopML"]["ndcg"]
    return {
        "benchmark": "completejourney-a",
        "protocol": "train on purchases before 2017-11-01; test households with purchases "
        "before and after (the evaluation's returning_users slice); relevant = distinct "
        "products bought on or after the cutoff; already-bought products allowed; k=10",
        "k": K,
        "config": str(config),
        "test_households": len(cmp.challenger.slices[part]),
        "evaluation_users": len(es.users),
        "truth_rows": len(es.truth),
        "metrics": figures,
        "best_baseline": {"name": best[1], "ndcg": best[0]},
        "shopml_vs_best_baseline": round(shopml / max(best[0], 1e-12) - 1, 4),
        "target_ndcg": CJ_TARGET,
        "reaches_target": shopml >= CJ_TARGET,
        "above_every_baseline": shopml > best[0],
        "blessed_by_default_gate": result.blessed,
        "gate_reasons": result.verdict["reasons"],
        "repeat_policy": {k: v for k, v in es.repeat_policy.items() if k != "categories"},
        "model_version": outcome.version,
        "train_seconds": round(train_seconds, 1),
        "ranker": {k: round(v, 4) for k, v in outcome.result.metrics.items()},
        "seconds": round(time.perf_counter() - started, 1),
    }
