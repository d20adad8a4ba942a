"""``shopml search evaluate``: score a search challenger (and the champion) on a
snapshot's held-out queries, judge the search gate, write the verdict and the report.

The evaluation queries are what training never saw (:func:`pipelines.search.model.prepare`):

- the query log's last ``[search] holdout_days``: every query with a click; relevant =
  its clicked items, gain 1 / 3 / 7 for a click / an add to cart with the query's id / a
  purchase (:func:`pipelines.search.labels.logged`);
- the judged queries of the evaluation share (``[search] judged_holdout``, picked by a
  hash of the text, :func:`pipelines.search.labels.held_out`); gain ``2^label - 1``.

Every model ranks the whole catalog for each query through its own ``search`` (the
served path: query understanding, fallbacks, the re-ranker, the shopper's interest tags
for a known shopper as of the model's training time). On the same rows: BM25 alone (bm25s
defaults, English stop words, title + description) and the challenger's unpersonalised
hybrid first stage (fused lexical + semantic, no re-ranker) are the gate's baselines; the
challenger answered anonymously is shown beside them. Metrics at k = 10: nDCG (unjudged =
0), MRR, recall and the zero-result rate, with 95 % percentile bootstrap intervals over
queries, the challenger - champion difference paired. Slices: log / judged queries,
head / torso / tail by the query's frequency in the log before the holdout, misspelled
(the challenger's speller corrects it) / correctly spelled, returning / new shoppers,
and the top categories of the relevant items. The gate is :func:`pipelines.evaluation.gate.judge`
with the ``[search_gate]`` table (:data:`DEFAULT_CHECKS`).
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import bm25s
import numpy as np
import pandas as pd

from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import holdout_window
from pipelines.errors import ConfigError, ShopMLError
from pipelines.evaluation.bootstrap import Interval, bootstrap_means
from pipelines.evaluation.evaluate import run_context, write_signed_verdict
from pipelines.evaluation.gate import Check, GateConfig, Judgement, judge
from pipelines.evaluation.report import MARK
from pipelines.evaluation.search_benchmark import HEAD_MIN, bm25_baseline
from pipelines.io import folder_digest, sha256_file, write_json, write_text
from pipelines.ranking.metrics import per_user
from pipelines.registry.models import (
    CHAMPION,
    ModelRef,
    alias_version,
    log_evaluation,
    resolve,
    served_name,
)
from pipelines.registry.search import SEARCH_EXPERIMENT, SEARCH_MODEL, search_path
from pipelines.registry.tracking import configure
from pipelines.search.config import SearchConfig
from pipelines.search.engine import SearchIndex
from pipelines.search.labels import judged, logged, split_judged
from pipelines.search.model import SearchModel
from pipelines.search.text import STOP_WORDS
from pipelines.settings import Settings, check_tables
from pipelines.validation.validate import ensure_validated

K = 10
TOP_CATEGORIES = 5
SAMPLE_QUERIES = 5
METRIC_COLUMNS = ("ndcg", "mrr", "recall", "zero_result")
CHALLENGER, CHAMPION_LABEL = "challenger", "champion"
BM25, HYBRID, ANONYMOUS = "bm25", "hybrid", "challenger (anonymous)"
BASELINES = (BM25, HYBRID)


def _default_checks() -> list[Check]:
    return [
        Check("ndcg@10", over_baselines=0.0, relative=-0.01),
        Check("mrr@10", relative=-0.02),
        Check("recall@10", relative=-0.02),
    ]


DEFAULT_CHECKS = _default_checks()


@dataclass(frozen=True)
class SearchEvalConfig:
    """``[search]`` (what was held out) and ``[search_gate]`` (a :class:`GateConfig`:
    ``[[search_gate.checks]]``, ``min_users`` counting queries here)."""

    search: SearchConfig = field(default_factory=SearchConfig)
    gate: GateConfig = field(
        default_factory=lambda: GateConfig(checks=_default_checks(), min_users=50)
    )
    max_queries: int = 5_000  # evaluation queries scored (a seeded sample beyond)

    def __post_init__(self) -> None:
        for check in self.gate.checks:
            if check.k != K:
                raise ConfigError(f"search gate check {check.metric}: search is evaluated at k={K}")

    @classmethod
    def from_toml(cls, path: str | Path | None) -> SearchEvalConfig:
        """``[search]`` and ``[search_gate]`` of a pipeline config file; the gate's
        defaults are :data:`DEFAULT_CHECKS` and ``min_users = 50`` (queries)."""
        if path is None:
            return cls()
        check_tables(path)
        import tomllib

        table = dict(tomllib.loads(Path(path).read_text()).get("search_gate") or {})
        known = set(GateConfig.__dataclass_fields__)
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(
                f"{path}: unknown [search_gate] setting(s) {unknown}; known: {sorted(known)}"
            )
        gate = GateConfig(**{"checks": _default_checks(), "min_users": 50, **table})
        return cls(search=SearchConfig.from_toml(path), gate=gate)


@dataclass
class SearchEvalSet:
    """The held-out queries of one snapshot, the same for every model scored on it."""

    snapshot_id: str
    start: str | None  # the log's holdout window [start, end), ISO 8601 UTC
    end: str | None
    keys: list[str]
    texts: list[str]
    users: list[str | None]
    source: list[str]  # "log" | "judged"
    truth: pd.DataFrame  # user_id = key, item_id, relevance (gain)
    frequency: np.ndarray  # the text's count in the log before the holdout
    returning: np.ndarray  # the shopper had events before the holdout
    category: list[str]  # the top-level category of the query's best relevant item
    holdout_days: float
    judged_holdout: float
    hash: str = ""

    def __len__(self) -> int:
        return len(self.keys)

    def describe(self) -> dict[str, Any]:
        return {
            "hash": self.hash,
            "snapshot_id": self.snapshot_id,
            "window": [self.start, self.end],
            "queries": len(self.keys),
            "log_queries": int(sum(s == "log" for s in self.source)),
            "judged_queries": int(sum(s == "judged" for s in self.source)),
            "relevant": len(self.truth),
            "holdout_days": self.holdout_days,
            "judged_holdout": self.judged_holdout,
            "k": K,
        }


def freeze(snapshot: str | Path, cfg: SearchEvalConfig, index: SearchIndex) -> SearchEvalSet:
    """The evaluation queries of ``snapshot`` (``index``: any index of its catalog, for the
    item rows)."""
    snap = Snapshot.open(snapshot)
    scfg = cfg.search
    keys: list[str] = []
    texts: list[str] = []
    users: list[str | None] = []
    source: list[str] = []
    truth_parts: list[pd.DataFrame] = []
    start = end = None
    cutoff = math.inf
    if snap.rows("queries") and snap.rows("events"):
        lo, hi = holdout_window(snap, scfg.holdout_days)
        start, end, cutoff = lo.isoformat(), hi.isoformat(), lo.timestamp()
        test = logged(snap, index, start=cutoff)
        t = test.truth()
        keys += [f"log:{i}" for i in range(len(test))]
        texts += test.texts
        users += test.users
        source += ["log"] * len(test)
        truth_parts.append(
            pd.DataFrame(
                {
                    "user_id": "log:" + t["user_id"].astype(str),
                    "item_id": index.item_ids[t["item_id"].to_numpy(dtype=np.int64)],
                    "relevance": t["relevance"].to_numpy(),
                }
            )
        )
    if snap.has("judgments") and snap.rows("judgments") and scfg.judged_holdout > 0:
        _, held = split_judged(judged(snap, index), scfg.judged_holdout)
        keys += [f"judged:{q}" for q in held.queries]
        texts += held.queries
        users += [None] * len(held.queries)
        source += ["judged"] * len(held.queries)
        truth_parts.append(held.truth.assign(user_id="judged:" + held.truth["user_id"].astype(str)))
    if not keys:
        raise ShopMLError(
            f"snapshot {snap.path} has no held-out queries to evaluate search on: no clicked "
            f"queries in the last {scfg.holdout_days:g} days of its log and no judged queries "
            "in the evaluation share ([search] holdout_days, judged_holdout)"
        )
    if len(keys) > cfg.max_queries:  # a seeded sample, the same for every model
        pick = np.sort(np.random.default_rng(scfg.seed).permutation(len(keys))[: cfg.max_queries])
        keys, texts = [keys[i] for i in pick], [texts[i] for i in pick]
        users, source = [users[i] for i in pick], [source[i] for i in pick]
    truth = pd.concat(truth_parts, ignore_index=True)
    truth = truth[truth["user_id"].isin(set(keys))].reset_index(drop=True)
    before = _log_before(snap, cutoff)
    seen = pd.Series(before).value_counts() if before else pd.Series(dtype=int)
    frequency = np.array([int(seen.get(t, 0)) for t in texts])
    known = _users_before(snap, cutoff)
    returning = np.array([u is not None and u in known for u in users])
    cats = pd.Series(index.items["category"].astype(str).to_numpy(), index=index.item_ids)
    best = truth.sort_values(["user_id", "relevance"], ascending=[True, False]).drop_duplicates(
        "user_id"
    )
    top = dict(
        zip(best["user_id"], cats.reindex(best["item_id"]).fillna("").to_numpy(), strict=True)
    )
    category = [str(top.get(k, "")).split("/")[0] for k in keys]
    es = SearchEvalSet(
        snap.id, start, end, keys, texts, users, source, truth, frequency, returning, category,
        float(scfg.holdout_days), float(scfg.judged_holdout),
    )  # fmt: skip
    es.hash = _hash(es)
    return es


def _log_before(snap: Snapshot, cutoff: float) -> list[str]:
    if not snap.rows("queries"):
        return []
    q = snap.read("queries", columns=["text", "ts"]).to_pandas()
    if math.isfinite(cutoff):
        q = q[q["ts"] < pd.Timestamp(cutoff, unit="s", tz="UTC")]
    return q["text"].astype(str).tolist()


def _users_before(snap: Snapshot, cutoff: float) -> set[str]:
    if not snap.rows("events"):
        return set()
    ev = snap.read("events", columns=["user_id", "ts"]).to_pandas()
    if math.isfinite(cutoff):
        ev = ev[ev["ts"] < pd.Timestamp(cutoff, unit="s", tz="UTC")]
    return set(ev["user_id"].astype(str))


def _hash(es: SearchEvalSet) -> str:
    h = hashlib.sha256()
    h.update(
        json.dumps([es.snapshot_id, es.start, es.end, es.holdout_days, es.judged_holdout]).encode()
    )
    for key, text, user in zip(es.keys, es.texts, es.users, strict=True):
        h.update(json.dumps([key, text, user]).encode())
    t = es.truth.sort_values(["user_id", "item_id"])
    h.update(pd.util.hash_pandas_object(t, index=False).to_numpy().tobytes())
    return h.hexdigest()


# ----------------------------------------------------------------------------- scoring


def _check_unseen(model: SearchModel, es: SearchEvalSet, label: str, uri: str) -> None:
    """Refuse a model that trained on the held-out queries."""
    info = model.info
    until = info.get("train_until")
    if es.start is not None and (until is None or pd.Timestamp(until) > pd.Timestamp(es.start)):
        raise ShopMLError(
            f"the {label} {uri} was trained on the query log until {until or 'its end'}, after "
            f"the evaluation window starts ({es.start}): it has seen the held-out queries. "
            "Train it with `shopml search train` (which holds out [search] holdout_days), or "
            "evaluate on a later snapshot"
        )
    if any(s == "judged" for s in es.source):
        share = info.get("judged_holdout")
        if share is None or float(share) != es.judged_holdout:
            raise ShopMLError(
                f"the {label} {uri} held out judged_holdout = {share}, the evaluation "
                f"{es.judged_holdout}: it may have trained on the judged queries scored here"
            )


def model_lists(model: SearchModel, es: SearchEvalSet, *, personal: bool = True) -> pd.DataFrame:
    """The model's top ``K`` for every evaluation query (rows user_id = key, rank,
    item_id, score), through its own ``search``; the fallback used per query in
    ``attrs["fallback"]``."""
    parts = []
    fallbacks = []
    for key, text, user in zip(es.keys, es.texts, es.users, strict=True):
        res, c = model.search(text, k=K, user=user if personal else None)
        fallbacks.append(c.fallback or "")
        parts.append(res[["rank", "item_id", "score"]].assign(user_id=key))
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    out.attrs["fallback"] = fallbacks
    return out


def _bm25_lists(items: pd.DataFrame, es: SearchEvalSet) -> pd.DataFrame:
    """Plain BM25 (title + description, bm25s defaults) over the snapshot's catalog."""
    base = bm25_baseline(items)
    item_ids = items["item_id"].to_numpy()
    parts = []
    for key, text in zip(es.keys, es.texts, strict=True):
        toks = bm25s.tokenize(
            text, stopwords=sorted(STOP_WORDS), show_progress=False, return_ids=False
        )[0]
        s = np.asarray(base.get_scores(toks))
        r = np.flatnonzero(s > 0)
        order = r[np.lexsort((r, -s[r]))][:K]
        parts.append(
            pd.DataFrame(
                {"user_id": key, "rank": np.arange(1, len(order) + 1),
                 "item_id": item_ids[order], "score": s[order]}
            )
        )  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def _hybrid_lists(index: SearchIndex, es: SearchEvalSet) -> pd.DataFrame:
    parts = []
    for key, text in zip(es.keys, es.texts, strict=True):
        c = index.candidates(text)
        rows = c.items[:K]
        parts.append(
            pd.DataFrame(
                {"user_id": key, "rank": np.arange(1, len(rows) + 1),
                 "item_id": index.item_ids[rows], "score": c.fused[:K]}
            )
        )  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def per_query(lists: pd.DataFrame, es: SearchEvalSet) -> pd.DataFrame:
    """nDCG, MRR, recall at ``K`` and zero-result (1 when nothing was listed) per query."""
    keys = pd.Index(es.keys, name="user_id")
    t = per_user(lists, es.truth, K).reindex(keys).fillna(0.0)
    listed = lists.groupby("user_id").size().reindex(keys, fill_value=0)
    t["zero_result"] = (listed == 0).astype(float).to_numpy()
    return t[list(METRIC_COLUMNS)]


def slices(es: SearchEvalSet, misspelled: np.ndarray) -> dict[str, np.ndarray]:
    src = np.array(es.source)
    out = {
        "all": np.ones(len(es), dtype=bool),
        "log": src == "log",
        "judged": src == "judged",
        "head": es.frequency >= HEAD_MIN,
        "torso": (es.frequency >= 2) & (es.frequency < HEAD_MIN),
        "tail": es.frequency < 2,
        "misspelled": misspelled,
        "correctly_spelled": ~misspelled,
        "returning": es.returning,
        "new": (src == "log") & ~es.returning,
    }
    cats = pd.Series(es.category)
    for name in cats[cats != ""].value_counts().head(TOP_CATEGORIES).index:
        out[f"category={name}"] = (cats == name).to_numpy()
    return {k: v for k, v in out.items() if v.any()}


def _intervals(
    tables: dict[str, pd.DataFrame], masks: dict[str, np.ndarray], confidence: float = 0.95
) -> tuple[dict[str, dict[tuple[str, str], Interval]], dict[tuple[str, str], Interval]]:
    """Per method, (slice, metric@K) -> interval; and the paired challenger - champion."""
    own: dict[str, dict[tuple[str, str], Interval]] = {m: {} for m in tables}
    diff: dict[tuple[str, str], Interval] = {}
    names = list(tables)
    for s, mask in masks.items():
        cols = [tables[m][c].to_numpy()[mask] for m in names for c in METRIC_COLUMNS]
        has_champ = CHAMPION_LABEL in tables
        if has_champ:
            cols += [
                tables[CHALLENGER][c].to_numpy()[mask] - tables[CHAMPION_LABEL][c].to_numpy()[mask]
                for c in METRIC_COLUMNS
            ]
        ivs = bootstrap_means(np.column_stack(cols), confidence=confidence, seed=0)
        for i, m in enumerate(names):
            for j, c in enumerate(METRIC_COLUMNS):
                own[m][(s, f"{c}@{K}")] = ivs[i * len(METRIC_COLUMNS) + j]
        if has_champ:
            base = len(names) * len(METRIC_COLUMNS)
            for j, c in enumerate(METRIC_COLUMNS):
                diff[(s, f"{c}@{K}")] = ivs[base + j]
    return own, diff


def _values(own: dict[tuple[str, str], Interval]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for (s, metric), iv in own.items():
        out.setdefault(s, {})[metric] = iv.mean
    return out


# ----------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class SearchEvaluation:
    blessed: bool
    judgement: Judgement
    eval_set: SearchEvalSet
    values: dict[str, dict[str, dict[str, float]]]  # method -> slice -> metric -> mean
    out_dir: Path
    verdict: dict[str, Any]
    run_id: str | None
    seconds: float


def evaluate_search(
    *,
    model_uri: str,
    snapshot_uri: str | Path,
    settings: Settings,
    cfg: SearchEvalConfig | None = None,
    champion_uri: str | None = None,
    use_champion: bool = True,
    out_dir: str | Path | None = None,
    log_to_mlflow: bool = True,
) -> SearchEvaluation:
    """Score ``model_uri`` (and the champion: ``champion_uri``, else the registry's
    ``shopml-search@champion`` when there is one) on the snapshot's held-out queries,
    judge the search gate and write verdict.json (signed), report.html, summary.md,
    metrics.json and runs.csv (every method's ranked lists)."""
    started = time.perf_counter()
    cfg = cfg or SearchEvalConfig()
    ensure_validated(Snapshot.open(snapshot_uri))
    ref = _resolve(model_uri, settings)
    bundle = search_path(ref.uri, settings)
    model = SearchModel.load(bundle)
    es = freeze(snapshot_uri, cfg, model.index)
    _check_unseen(model, es, "challenger", ref.uri)
    champ_ref = None
    if use_champion:
        champ_ref = _resolve(champion_uri, settings) if champion_uri else _champion(settings)
    notes: list[str] = []
    runs = {
        BM25: _bm25_lists(Snapshot.open(snapshot_uri).read("items").to_pandas(), es),
        HYBRID: _hybrid_lists(model.index, es),
        ANONYMOUS: model_lists(model, es, personal=False),
        CHALLENGER: model_lists(model, es),
    }
    champion_model = None
    if champ_ref is not None:
        if (champ_ref.name, champ_ref.version) == (ref.name, ref.version) and ref.version:
            notes.append(f"the model is the champion itself (version {ref.version})")
        champion_model = SearchModel.load(search_path(champ_ref.uri, settings))
        _check_unseen(champion_model, es, "champion", champ_ref.uri)
        runs[CHAMPION_LABEL] = model_lists(champion_model, es)
    misspelled = np.array([model.index.understand(t)[1] is not None for t in es.texts])
    tables = {m: per_query(r, es) for m, r in runs.items()}
    masks = slices(es, misspelled)
    own, diff = _intervals(tables, masks)
    values = {m: _values(own[m]) for m in tables}
    judgement = judge(
        cfg.gate,
        values[CHALLENGER],
        popularity=values[BM25],
        baselines={m: values[m] for m in BASELINES},
        champion=values.get(CHAMPION_LABEL),
        differences=diff,
        slice_users={s: int(m.sum()) for s, m in masks.items()},
        min_slice_users=10,
        intervals=own[CHALLENGER],
        unit="queries",
    )
    judgement.notes.extend(notes)
    folder = Path(out_dir) if out_dir else _default_out(settings, ref, es)
    folder.mkdir(parents=True, exist_ok=True)
    all_runs = pd.concat([r.assign(method=m) for m, r in runs.items()], ignore_index=True)
    all_runs.rename(columns={"user_id": "query_key"}).to_csv(folder / "runs.csv", index=False)
    fallbacks = {m: _fallback_share(r) for m, r in runs.items() if "fallback" in r.attrs}
    metrics = {
        "eval_set": es.describe(),
        "methods": {
            m: {f"{s}|{metric}": iv.as_dict() for (s, metric), iv in own[m].items()} for m in own
        },
        "difference": {f"{s}|{metric}": iv.as_dict() for (s, metric), iv in diff.items()},
        "slice_queries": {s: int(m.sum()) for s, m in masks.items()},
        "fallbacks": fallbacks,
    }
    write_json(folder / "metrics.json", metrics)
    champion_lists = None if champion_model is None else runs[CHAMPION_LABEL]
    files = write_report(
        folder, es, judgement, own, diff, masks, model, runs[CHALLENGER], champion_lists,
        runs[BM25], ref, champ_ref,
    )  # fmt: skip
    verdict = {
        "blessed": judgement.blessed,
        "model": {
            "uri": ref.uri,
            "name": ref.name,
            "version": ref.version,
            "bundle_sha256": folder_digest(bundle),
        },
        "champion": None
        if champ_ref is None
        else {"uri": champ_ref.uri, "name": champ_ref.name, "version": champ_ref.version},
        "eval_set": es.describe(),
        "checks": [asdict(o) for o in judgement.outcomes],
        "reasons": [o.reason for o in judgement.outcomes],
        "notes": judgement.notes,
        "gate": cfg.gate.as_dict(),
        "files": files,
        "train_until": model.info.get("train_until"),
        "compared_with_champion": use_champion,
        **run_context(),
    }
    write_signed_verdict(folder, verdict, settings)
    run_id = None
    if log_to_mlflow and ref.version is not None:
        configure(settings, SEARCH_EXPERIMENT)
        run_id = log_evaluation(ref, folder, verdict, values[CHALLENGER]["all"])
    return SearchEvaluation(
        judgement.blessed, judgement, es, values, folder, verdict, run_id,
        time.perf_counter() - started,
    )  # fmt: skip


def _fallback_share(lists: pd.DataFrame) -> dict[str, int]:
    counts = pd.Series(lists.attrs["fallback"]).value_counts()
    return {str(k) or "none": int(v) for k, v in counts.items()}


def _resolve(uri: str, settings: Settings) -> ModelRef:
    if Path(uri).is_dir():
        return ModelRef(uri=uri, name=None, version=None)
    configure(settings, SEARCH_EXPERIMENT)
    ref = resolve(uri, settings)
    if ref.name is not None and served_name(ref.name) != SEARCH_MODEL:
        raise ShopMLError(f"{uri} is a {ref.name} model, not a {SEARCH_MODEL} one")
    return ref


def _champion(settings: Settings) -> ModelRef | None:
    return alias_version(SEARCH_MODEL, CHAMPION, settings)


def _default_out(settings: Settings, ref: ModelRef, es: SearchEvalSet) -> Path:
    who = f"{ref.name}-v{ref.version}" if ref.version is not None else Path(ref.uri).name
    return settings.home / "evaluations" / f"{who}-{es.hash[:12]}"


# ----------------------------------------------------------------------------- report


def _cell(iv: Interval | None) -> str:
    if iv is None or not math.isfinite(iv.mean):
        return "–"
    if not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return f"{iv.mean:.4f}"
    return f"{iv.mean:.4f} <small>[{iv.low:.4f}, {iv.high:.4f}]</small>"


def sample_queries(es: SearchEvalSet, misspelled: np.ndarray, n: int = SAMPLE_QUERIES) -> list[int]:
    """A few evaluation queries to show side by side: the most frequent ones, a
    misspelled one and a returning shopper's one (distinct texts)."""
    order = np.argsort(-es.frequency, kind="stable")
    picked: list[int] = []
    texts: set[str] = set()

    def take(i: int) -> None:
        if es.texts[i] not in texts and len(picked) < n:
            picked.append(int(i))
            texts.add(es.texts[i])

    for mask in (misspelled, es.returning):
        hits = np.flatnonzero(mask)
        if len(hits):
            take(int(hits[0]))
    for i in order:
        take(int(i))
    return sorted(picked)


def write_report(
    folder: Path,
    es: SearchEvalSet,
    judgement: Judgement,
    own: dict[str, dict[tuple[str, str], Interval]],
    diff: dict[tuple[str, str], Interval],
    masks: dict[str, np.ndarray],
    model: SearchModel,
    challenger: pd.DataFrame,
    champion: pd.DataFrame | None,
    bm25: pd.DataFrame,
    ref: ModelRef,
    champ_ref: ModelRef | None,
) -> dict[str, str]:
    """``report.html`` (self-contained; every text from the data escaped) and
    ``summary.md``; returns their sha256 by file name."""
    e = html.escape
    verdict_word = "blessed" if judgement.blessed else "not blessed"
    who = f"{ref.name} version {ref.version}" if ref.version else ref.uri
    against = f"{champ_ref.name} version {champ_ref.version}" if champ_ref else "no champion"
    methods = list(own)
    head = "".join(f"<th>{e(m)}</th>" for m in methods)
    rows = []
    for metric in METRIC_COLUMNS:
        cells = "".join(f"<td>{_cell(own[m].get(('all', f'{metric}@{K}')))}</td>" for m in methods)
        rows.append(f"<tr><th>{metric}@{K}</th>{cells}</tr>")
    slice_rows = []
    for s, mask in masks.items():
        cells = "".join(f"<td>{_cell(own[m].get((s, f'ndcg@{K}')))}</td>" for m in methods)
        d = diff.get((s, f"ndcg@{K}"))
        change = (
            ""
            if d is None
            else f"<td>{d.mean:+.4f} <small>[{d.low:+.4f}, {d.high:+.4f}]</small></td>"
        )
        slice_rows.append(f"<tr><th>{e(s)}</th><td>{int(mask.sum())}</td>{cells}{change}</tr>")
    checks = "".join(f"<li>{MARK[o.passed]} {e(o.reason)}</li>" for o in judgement.outcomes)
    notes = "".join(f"<li>{e(n)}</li>" for n in judgement.notes)
    titles = pd.Series(
        model.index.items["title"].astype(str).to_numpy(), index=model.index.item_ids
    )
    other, other_label = (champion, "champion") if champion is not None else (bm25, "BM25")
    misspelled = masks.get("misspelled", np.zeros(len(es), dtype=bool))
    samples = []
    for i in sample_queries(es, misspelled):
        key = es.keys[i]
        relevant = set(es.truth.loc[es.truth["user_id"] == key, "item_id"])

        def column(lists: pd.DataFrame, key: str = key, relevant: set[Any] = relevant) -> str:
            got = lists[lists["user_id"] == key].sort_values("rank")
            items = []
            for r in got.itertuples(index=False):
                mark = " ✔" if r.item_id in relevant else ""
                title = titles.get(r.item_id, str(r.item_id))
                items.append(f"<li>{e(str(title))} <small>({e(str(r.item_id))}){mark}</small></li>")
            return "<ol>" + ("".join(items) or "<li><em>no results</em></li>") + "</ol>"

        # whether the query was personalised, not who asked: a reviewer needs no shopper id
        shopper = " — a known shopper" if es.users[i] else " — anonymous"
        samples.append(
            f"<h3>“{e(es.texts[i])}”{shopper}</h3><table class='side'><tr>"
            f"<th>{e(other_label)}</th><th>challenger</th></tr><tr>"
            f"<td>{column(other)}</td><td>{column(challenger)}</td></tr></table>"
        )
    d_head = "<th>challenger − champion</th>" if diff else ""
    desc = es.describe()
    page = f"""<!doctype html><html><head><meta charset="utf-8">
<title>Search evaluation: {e(who)}</title>
<style>body{{font-family:sans-serif;max-width:70em;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}}
table.side td{{width:50%}} small{{color:#666}}</style></head><body>
<h1>Search evaluation: {e(who)} — {verdict_word}</h1>
<p>Against {e(against)}, on snapshot {e(es.snapshot_id[:12])} (eval set {e(es.hash[:12])}):
{desc["queries"]} held-out queries ({desc["log_queries"]} from the log's last {es.holdout_days:g} days,
{desc["judged_queries"]} judged). nDCG@{K} over the whole catalog, unjudged = 0; 95 % bootstrap
intervals over queries.</p>
<h2>Gate</h2><ul>{checks}</ul>{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
<h2>Headline</h2><table><tr><th></th>{head}</tr>{"".join(rows)}</table>
<h2>nDCG@{K} by slice</h2><table><tr><th>slice</th><th>queries</th>{head}{d_head}</tr>{"".join(slice_rows)}</table>
<h2>Sample queries: {e(other_label)} and challenger, top {K}</h2>
<p>✔ marks a relevant item (clicked in the held-out log, or judged relevant).</p>
{"".join(samples)}
<p><small>Written {datetime.now(UTC).isoformat(timespec="seconds")}</small></p></body></html>
"""
    write_text(folder / "report.html", page)
    ch = own[CHALLENGER]
    lines = [
        f"**{who}**: {verdict_word} (against {against})",
        "",
        f"{desc['queries']} held-out queries; nDCG@{K}: challenger {ch[('all', f'ndcg@{K}')].mean:.4f}, "
        + ", ".join(
            f"{m} {own[m][('all', f'ndcg@{K}')].mean:.4f}" for m in methods if m != CHALLENGER
        ),
        "",
        *[f"- {MARK[o.passed]} {o.reason}" for o in judgement.outcomes],
        *[f"- note: {n}" for n in judgement.notes],
    ]
    write_text(folder / "summary.md", "\n".join(lines) + "\n")
    return {f: sha256_file(folder / f) for f in ("report.html", "summary.md")}
