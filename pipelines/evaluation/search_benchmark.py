"""``shopml benchmark search``: BM25, semantic, hybrid and learned search on a snapshot's
judgments, every tuned method under query-grouped cross-validation.

Protocol: every method ranks the whole catalog for each judged query; gains are
``2^label - 1`` (:mod:`pipelines.search.ranker`); unjudged items count 0. The folds
split the queries (seeded); in each fold the field weights, the fusion weight and the
re-ranker are fitted on the other folds' queries only and the fold's queries are
ranked. The baseline is plain BM25 over title + description with bm25s's defaults and
English stop words (no stemming, no fields): what a team gets from a BM25 library.
Intervals are 95 % percentile bootstraps over queries; differences are paired.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pandas as pd

from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import holdout_window, load_timeline
from pipelines.errors import ContractError
from pipelines.evaluation.bootstrap import bootstrap_means
from pipelines.features.config import FeatureConfig
from pipelines.ranking.metrics import per_user
from pipelines.search import ranker
from pipelines.search.config import SearchConfig
from pipelines.search.engine import SearchIndex
from pipelines.search.labels import Judged, judged, logged
from pipelines.search.pit import AsOf
from pipelines.search.pit import rows as pit_rows
from pipelines.search.text import STOP_WORDS

log = logging.getLogger(__name__)
K = 10
METHODS = ("bm25", "lexical", "semantic", "hybrid", "learned")


def _top(
    scores: np.ndarray, k: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``scores`` with a positive score (or over ``rows``), best first."""
    r = np.flatnonzero(scores > 0) if rows is None else rows
    order = np.lexsort((r, -scores[r]))[:k]
    return r[order], scores[r][order]


def bm25_baseline(items: pd.DataFrame) -> Any:
    docs = list(items["title"].fillna("") + " " + items["description"].fillna(""))
    idx = bm25s.BM25()
    idx.index(
        bm25s.tokenize(docs, stopwords=sorted(STOP_WORDS), show_progress=False), show_progress=False
    )
    return idx


def run(
    snapshot: str | Path, cfg: SearchConfig, *, folds: int | None = None
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Score every method; returns (results document, every method's ranked lists)."""
    started = time.perf_counter()
    snap = Snapshot.open(snapshot)
    items = snap.read("items").to_pandas()
    index = SearchIndex.build(items, cfg)
    built = time.perf_counter() - started
    data = judged(snap, index)
    n_folds = folds or cfg.folds
    if len(data.queries) < n_folds:
        raise ContractError(
            str(snap.path), f"{len(data.queries)} judged queries, fewer than {n_folds} folds"
        )
    rng = np.random.default_rng(cfg.seed)
    fold_of = rng.permutation(len(data.queries)) % n_folds
    runs: list[pd.DataFrame] = []

    def keep(method: str, q: str, rows: np.ndarray, scores: np.ndarray, fold: int = -1) -> None:
        runs.append(
            pd.DataFrame(
                {"method": method, "fold": fold, "query": q, "rank": np.arange(1, len(rows) + 1),
                 "item_id": index.item_ids[rows], "score": scores}
            )
        )  # fmt: skip

    base = bm25_baseline(items)
    for q in data.queries:
        toks = bm25s.tokenize(
            q, stopwords=sorted(STOP_WORDS), show_progress=False, return_ids=False
        )[0]
        r, s = _top(np.asarray(base.get_scores(toks)), K)
        keep("bm25", q, r, s)
        _fields, cosine, _ = index.raw_scores(q)
        r, s = _top(cosine.astype(np.float64), K, np.flatnonzero(cosine >= cfg.min_cosine))
        keep("semantic", q, r, s)
    tuned: list[dict[str, Any]] = []
    for f in range(n_folds):
        train_q = [i for i in range(len(data.queries)) if fold_of[i] != f]
        test_q = [i for i in range(len(data.queries)) if fold_of[i] == f]
        tq = [data.queries[i] for i in train_q]
        tl = [data.labels[i] for i in train_q]
        weights, alpha, first, image_weight = ranker.tune(index, tq, tl, k=K)
        fold_index = index.with_params(weights, alpha, image_weight)
        lex_index = index.with_params(weights, 1.0, image_weight)
        fold_rows = ranker.rows(fold_index, tq, tl)
        booster, _ = ranker.fit(*ranker.split(fold_rows, cfg.validation_share, cfg.seed), cfg)
        tuned.append({"fold": f, "field_weights": weights, "alpha": alpha, "image_weight": image_weight,
                      "train_first_stage_ndcg": round(first, 4),
                      "ranker_rounds": int(getattr(booster, "best_iteration", 0) or 0)})  # fmt: skip
        for i in test_q:
            q = data.queries[i]
            c = lex_index.candidates(q, n=K)
            keep("lexical", q, c.items, c.fused, f)
            c = fold_index.candidates(q)
            keep("hybrid", q, c.items[:K], c.fused[:K], f)
            s = ranker.rerank(fold_index, booster, c)
            order = np.lexsort((c.items, -s))[:K]
            keep("learned", q, c.items[order], s[order], f)
        log.info("search benchmark: fold %d of %d done", f + 1, n_folds)
    all_runs = pd.concat(runs, ignore_index=True)
    doc = summarise(all_runs, data, index, n_folds)
    doc.update({"tuned": tuned, "index_seconds": round(built, 1),
                "seconds": round(time.perf_counter() - started, 1),
                "config": cfg.as_dict()})  # fmt: skip
    return doc, all_runs


def score_methods(
    runs: pd.DataFrame, truth: pd.DataFrame, queries: list[str], methods: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Per method: each metric's mean with its 95 % interval and the paired difference to
    the first method; and the per-query tables (for slices)."""
    qs = pd.Index(queries, name="user_id")
    tables = {}
    for m in methods:
        r = runs[runs["method"] == m].rename(columns={"query": "user_id"})
        t = per_user(r, truth, K).reindex(qs).fillna(0.0)
        listed = r.groupby("user_id").size().reindex(qs, fill_value=0)
        t["zero_result"] = (listed == 0).astype(float)
        tables[m] = t
    return interval_table(tables, methods), tables


def interval_table(
    tables: dict[str, pd.DataFrame], methods: tuple[str, ...], mask: np.ndarray | None = None
) -> dict[str, Any]:
    cols = ["ndcg", "mrr", "recall", "zero_result"]
    base = methods[0]
    pick = (lambda a: a) if mask is None else (lambda a: a[mask])
    stacked = np.column_stack([pick(tables[m][c].to_numpy()) for m in methods for c in cols])
    diffs = np.column_stack(
        [pick(tables[m]["ndcg"].to_numpy() - tables[base]["ndcg"].to_numpy()) for m in methods]
    )
    ci = bootstrap_means(np.column_stack([stacked, diffs]), seed=0)

    def rounded(v: Any) -> dict[str, float]:
        return {"mean": round(v.mean, 4), "low": round(v.low, 4), "high": round(v.high, 4)}

    out: dict[str, Any] = {}
    for i, m in enumerate(methods):
        block = ci[i * len(cols) : (i + 1) * len(cols)]
        out[m] = {c: rounded(v) for c, v in zip(cols, block, strict=True)}
        out[m][f"ndcg_minus_{base}"] = rounded(ci[len(methods) * len(cols) + i])
    return out


def summarise(runs: pd.DataFrame, data: Judged, index: SearchIndex, folds: int) -> dict[str, Any]:
    metrics, _ = score_methods(runs, data.truth, data.queries, METHODS)
    return {
        "protocol": f"whole catalog, gains 2^label - 1 from the judgments, unjudged = 0, k={K}, "
        f"{folds}-fold query-grouped cross-validation for the tuned methods",
        "queries": len(data.queries),
        "items": len(index.item_ids),
        "judgments": len(data.truth),
        "embedding": index.embedder.kind,
        "metrics": metrics,
    }


LOG_METHODS = ("bm25", "hybrid", "learned", "personal")
HEAD_MIN = 10  # head queries: typed 10 or more times in the training log; torso 2-9; tail 0-1


def run_log(
    snapshot: str | Path, cfg: SearchConfig, *, holdout_days: float = 7.0
) -> tuple[dict[str, Any], pd.DataFrame]:
    """The query-log protocol: train on the log before the last ``holdout_days``, rank
    the whole catalog for each held-out query that got a click; relevant = its clicked
    items (gain 1, 3 or 7 for a click, an add to cart, a purchase). ``learned`` is the
    re-ranker with the shopper's features missing, ``personal`` the same model's rows
    with them, trained on the same queries."""
    started = time.perf_counter()
    snap = Snapshot.open(snapshot)
    if not snap.rows("queries") or not snap.rows("events"):
        raise ContractError(str(snap.path), "the query-log protocol needs queries and events")
    items = snap.read("items").to_pandas()
    queries = snap.read("queries").to_pandas()
    cutoff = holdout_window(snap, holdout_days)[0].timestamp()
    index = SearchIndex.build(items, cfg)
    train_q = logged(snap, index, end=cutoff)
    test_q = logged(snap, index, start=cutoff)
    if len(train_q) < 20 or not len(test_q):
        raise ContractError(
            str(snap.path),
            f"{len(train_q)} clicked queries before and {len(test_q)} after the cutoff",
        )
    weights, alpha, _, image_weight = ranker.tune(index, train_q.texts, train_q.labels, k=K)
    index = index.with_params(weights, alpha, image_weight)
    asof = AsOf(
        index,
        load_timeline(snap),
        queries[queries["ts"] < pd.Timestamp(cutoff, unit="s", tz="UTC")],
        FeatureConfig(),
    )
    rows = pit_rows(asof, train_q)
    personal_model, _ = ranker.fit(*ranker.split(rows, cfg.validation_share, cfg.seed), cfg)
    anon = ranker.without_personal(rows)
    anon_model, _ = ranker.fit(*ranker.split(anon, cfg.validation_share, cfg.seed), cfg)
    _, idx_c, prof_c, tags_c = next(asof.days(np.array([cutoff])))
    base = bm25_baseline(items)
    runs: list[pd.DataFrame] = []
    keys = [str(i) for i in range(len(test_q))]
    misspelled = np.zeros(len(test_q), dtype=bool)
    returning = np.zeros(len(test_q), dtype=bool)

    def keep(method: str, key: str, r: np.ndarray, sc: np.ndarray) -> None:
        runs.append(pd.DataFrame({"method": method, "fold": -1, "query": key,
                                  "rank": np.arange(1, len(r) + 1), "item_id": index.item_ids[r], "score": sc}))  # fmt: skip

    for i, key in enumerate(keys):
        text, user = test_q.texts[i], test_q.users[i]
        toks = bm25s.tokenize(
            text, stopwords=sorted(STOP_WORDS), show_progress=False, return_ids=False
        )[0]
        r, sc = _top(np.asarray(base.get_scores(toks)), K)
        keep("bm25", key, r, sc)
        c = idx_c.candidates(text)
        keep("hybrid", key, c.items[:K], c.fused[:K])
        s_anon = ranker.rerank(idx_c, anon_model, c)
        o = np.lexsort((c.items, -s_anon))[:K]
        keep("learned", key, c.items[o], s_anon[o])
        p = prof_c.features(user, c.items, tags_c)
        s_pers = ranker.rerank(idx_c, personal_model, c, p)
        o = np.lexsort((c.items, -s_pers))[:K]
        keep("personal", key, c.items[o], s_pers[o])
        misspelled[i] = c.corrected is not None
        returning[i] = (
            user is not None
            and prof_c.user_row.get(user) is not None
            and prof_c.events[prof_c.user_row[user]] > 0
        )
    all_runs = pd.concat(runs, ignore_index=True)
    t = test_q.truth()
    truth = t.assign(item_id=index.item_ids[t["item_id"].to_numpy()])
    metrics, tables = score_methods(all_runs, truth, keys, LOG_METHODS)
    seen = pd.Series(train_q.texts).value_counts()
    freq = np.array([int(seen.get(t, 0)) for t in test_q.texts])
    slices = {}
    for name, mask in (("misspelled", misspelled), ("correctly_spelled", ~misspelled),
                       ("returning", returning), ("new", ~returning),
                       ("head", freq >= HEAD_MIN), ("torso", (freq >= 2) & (freq < HEAD_MIN)),
                       ("tail", freq < 2)):  # fmt: skip
        if mask.any():
            slices[name] = {"queries": int(mask.sum()), **interval_table(tables, LOG_METHODS, mask)}
    doc = {
        "protocol": f"query log: train before the last {holdout_days:g} days, rank the whole catalog "
        f"for each held-out query with a click; relevant = clicked items (gain 1 click, 3 add to cart, "
        f"7 purchase); k={K}",
        "train_queries": len(train_q),
        "test_queries": len(test_q),
        "items": len(index.item_ids),
        "field_weights": weights,
        "alpha": alpha,
        "image_weight": image_weight,
        "metrics": metrics,
        "slices": slices,
        "personal_vs_learned": round(
            metrics["personal"]["ndcg"]["mean"] / max(metrics["learned"]["ndcg"]["mean"], 1e-12)
            - 1,
            4,
        ),
        "personal_vs_bm25": round(
            metrics["personal"]["ndcg"]["mean"] / max(metrics["bm25"]["ndcg"]["mean"], 1e-12) - 1, 4
        ),
        "seconds": round(time.perf_counter() - started, 1),
        "config": cfg.as_dict(),
    }
    return doc, all_runs
