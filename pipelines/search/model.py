"""A trained search model: the index, its tuned first stage and the re-ranker, saved to
one folder; what ``shopml search train`` writes and ``shopml search query`` reads.

Folder layout: ``index/`` (:class:`SearchIndex`), ``ranker.txt`` (the LightGBM model,
when the snapshot had judgments to learn from) and ``model.json`` (format, config,
tuned weights, the snapshot it was trained on, what was learned from what).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipelines.data.snapshot import Snapshot
from pipelines.data.timeline import holdout_window, load_timeline, snapshot_end
from pipelines.errors import ContractError, ShopMLError
from pipelines.features.config import FeatureConfig
from pipelines.io import why_not_a_file
from pipelines.search import ranker
from pipelines.search.config import SearchConfig
from pipelines.search.engine import Candidates, SearchIndex
from pipelines.search.labels import judged, logged, split_judged
from pipelines.search.personal import PERSONAL, ItemTags, Profiles, load_tags, save_tags
from pipelines.search.pit import AsOf
from pipelines.search.pit import rows as pit_rows
from pipelines.search.text import STOP_WORDS, words

log = logging.getLogger(__name__)
FORMAT = 1
MAX_K = 200
FALLBACK_WORDS = {
    "corrected": "showing results for the corrected query",
    "relaxed": "no item holds the query's words; showing items with words that start alike",
    "category": "no item matches the query; showing popular items of the categories it is searched for",
    "popular": "no item matches the query; showing popular items",
}


@dataclass
class SearchModel:
    index: SearchIndex
    booster: Any | None = None
    info: dict[str, Any] = field(default_factory=dict)
    profiles: Profiles | None = None  # the shoppers' interest tags at the snapshot's end
    tags: ItemTags | None = None

    # -- answering ------------------------------------------------------------------
    def search(
        self,
        query: str,
        *,
        k: int = 10,
        offset: int = 0,
        category: str | None = None,
        price_min: float | None = None,
        price_max: float | None = None,
        explain: bool = False,
        user: str | None = None,
    ) -> tuple[pd.DataFrame, Candidates]:
        """Ranked results (rank, item_id, title, category, price, score[, reasons]) and
        the candidates they came from (``.fallback``, ``.corrected``). A known ``user``
        gets the re-ranker's personal features; anyone else the same ranker without them."""
        if not 1 <= k <= MAX_K:
            raise ShopMLError(f"k must be in 1..{MAX_K}")
        if offset < 0:
            raise ShopMLError("offset must be >= 0")
        c = self.index.candidates(
            query, category=category, price_min=price_min, price_max=price_max
        )
        # the fallbacks without a match keep their own order (intent x popularity, popularity)
        unmatched = c.fallback in ("category", "popular")
        personal = self.personal(user, c.items)
        if self.booster is None or unmatched:
            scores = c.fused
        else:
            scores = ranker.rerank(self.index, self.booster, c, personal)
        order = np.lexsort((c.items, -scores))[offset : offset + k]
        rows = c.items[order]
        items = self.index.items
        out = pd.DataFrame(
            {
                "rank": np.arange(offset + 1, offset + len(rows) + 1),
                "item_id": self.index.item_ids[rows],
                "title": items["title"].to_numpy()[rows],
                "category": items["category"].to_numpy()[rows],
                "price": items["price"].to_numpy()[rows],
                "score": scores[order],
            }
        )
        if explain:
            out["reasons"] = [
                reasons(self.index, c, int(j), None if personal is None else personal[j])
                for j in order
            ]
        return out, c

    def personal(self, user: str | None, rows: np.ndarray) -> np.ndarray | None:
        """The shopper's feature columns for ``rows``; None for an unknown shopper."""
        if user is None or self.profiles is None or self.tags is None:
            return None
        if user not in self.profiles.user_row:
            return None
        return self.profiles.features(user, rows, self.tags)

    # -- persistence ----------------------------------------------------------------
    def erase_users(self, user_ids: list[str]) -> int:
        """Blank these shoppers' interest profiles (:meth:`Profiles.erase_users`)."""
        return 0 if self.profiles is None else self.profiles.erase_users(user_ids)

    def save(self, folder: str | Path, *, overwrite: bool = False) -> Path:
        out = Path(folder)
        if out.exists() and any(out.iterdir()) and not overwrite:
            raise ShopMLError(f"{out} exists and is not empty; pass --overwrite to replace it")
        tmp = out.with_name(f".{out.name}.tmp-{time.time_ns()}")
        try:
            self.index.save(tmp / "index")
            if self.booster is not None:
                self.booster.save_model(str(tmp / "ranker.txt"))
            if self.profiles is not None and self.tags is not None:
                self.profiles.save(tmp / "profiles")
                save_tags(self.tags, tmp / "profiles")
            (tmp / "model.json").write_text(
                json.dumps({"format": FORMAT, **self.info}, indent=1, default=str)
            )
            if out.exists():
                shutil.rmtree(out)
            tmp.rename(out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    @classmethod
    def load(cls, folder: str | Path) -> SearchModel:
        src = Path(folder)
        meta_file = src / "model.json"
        if why_not_a_file(meta_file) is not None:
            raise ShopMLError(f"{src} is not a search model (no model.json)")
        info = json.loads(meta_file.read_text())
        if info.get("format") != FORMAT:
            raise ShopMLError(f"{src}: search model format {info.get('format')}, expected {FORMAT}")
        booster = None
        if (src / "ranker.txt").is_file():
            import lightgbm as lgb

            booster = lgb.Booster(model_file=str(src / "ranker.txt"))
        index = SearchIndex.load(src / "index")
        profiles = tags = None
        if (src / "profiles").is_dir():
            profiles = Profiles.load(src / "profiles", np.asarray(index.vectors))
            tags = load_tags(src / "profiles")
        return cls(index, booster, info, profiles, tags)


def reasons(index: SearchIndex, c: Candidates, j: int, personal: np.ndarray | None = None) -> str:
    """Why candidate ``j`` of ``c`` is listed, in words (``personal``: the shopper's
    feature values for it)."""
    row = int(c.items[j])
    qwords = [w for w in words(c.corrected or c.query) if w not in STOP_WORDS]
    parts = []
    for f, label in (("title", "title"), ("brand", "brand"), ("category", "category")):
        text = index.items[f].iat[row] if f in index.items.columns else None
        if not isinstance(text, str) or not text:
            continue
        terms = set(index.analyzer.terms(text.replace("/", " ")))
        hit = [w for w in qwords if index.analyzer.stem_word(w) in terms]
        if hit:
            parts.append(f"matches '{' '.join(hit)}' in the {label}")
    if not parts and c.cosine[j] >= index.cfg.min_cosine:
        looks = index.has_image is not None and bool(index.has_image[row])
        what = "meaning and look" if looks and index.cfg.image_weight > 0 else "meaning"
        parts.append(f"similar in {what} ({c.cosine[j]:.2f})")
    if c.intent[j] >= 0.2:
        parts.append(f"a category shoppers pick for this query ({c.intent[j]:.0%})")
    if personal is not None:
        brand = index.items["brand"].iat[row] if "brand" in index.items.columns else None
        if isinstance(brand, str) and brand and personal[PERSONAL.index("user_brand_share")] >= 0.2:
            parts.append(f"you often buy {brand}")
        elif personal[PERSONAL.index("user_category_share")] >= 0.3:
            parts.append(f"you often shop {str(index.items['category'].iat[row]).split('/')[-1]}")
    if c.fallback in ("category", "popular"):
        parts.append(FALLBACK_WORDS[c.fallback])
    return "; ".join(parts) or "listed by the ranker"


def item_stats(
    snap: Snapshot, item_ids: np.ndarray, until: float = np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """Per item: events (all types) and purchases per view, from the snapshot's events
    before ``until`` (epoch seconds)."""
    n = len(item_ids)
    if not snap.rows("events"):
        return np.zeros(n), np.zeros(n)
    ev = snap.read("events", columns=["item_id", "event_type", "ts"]).to_pandas()
    if np.isfinite(until):
        ev = ev[ev["ts"] < pd.Timestamp(until, unit="s", tz="UTC")]
    row = pd.Series(np.arange(n), index=item_ids)
    r = row.reindex(ev["item_id"]).to_numpy()
    ok = ~np.isnan(r)
    r = r[ok].astype(np.int64)
    et = ev["event_type"].to_numpy()[ok]
    events = np.bincount(r, minlength=n).astype(np.float64)
    views = np.bincount(r[et == "view"], minlength=n).astype(np.float64)
    buys = np.bincount(r[et == "purchase"], minlength=n).astype(np.float64)
    return events, buys / np.maximum(views, 1.0)


def training_until(snap: Snapshot, cfg: SearchConfig) -> float:
    """Where training stops (epoch seconds): the start of the last ``holdout_days`` of
    the snapshot's events, which the evaluation scores; +inf without events."""
    if not snap.rows("events"):
        return float("inf")
    return holdout_window(snap, cfg.holdout_days)[0].timestamp()


def prepare(snapshot: str | Path, cfg: SearchConfig, *, until: float | None = None) -> SearchModel:
    """The first stage: index the snapshot's catalog as of ``until`` (default
    :func:`training_until`; popularity, conversion and query intent from the events and
    queries before it) and tune the field weights and the fusion on the training labels
    (:func:`label_source`): the log's clicked queries before ``until``, or the judged
    queries outside the evaluation share. No re-ranker yet (:func:`fit`)."""
    started = time.perf_counter()
    snap = Snapshot.open(snapshot)
    items = snap.read("items").to_pandas()
    if items.empty:
        raise ContractError(str(snap.path), "the snapshot has no items to search")
    t_end = training_until(snap, cfg) if until is None else float(until)
    queries = _queries_before(snap, t_end)
    events, conversion = item_stats(snap, items["item_id"].to_numpy(), t_end)
    index = SearchIndex.build(items, cfg, queries=queries, popularity=events, conversion=conversion)
    info: dict[str, Any] = {
        "snapshot_id": snap.id,
        "snapshot": str(snap.path),
        "items": len(items),
        "query_log_rows": 0 if queries is None else len(queries),
        "embedding": index.embedder.kind,
        "train_until": None if not np.isfinite(t_end) else _iso(t_end),
        "judged_holdout": cfg.judged_holdout,
    }
    source = label_source(snap, index, cfg, until=t_end)
    texts, labels = _training_labels(snap, index, cfg, source, t_end, info)
    if texts and cfg.tune:
        weights, alpha, first, image_weight = ranker.tune(index, texts, labels)
        index = index.with_params(weights, alpha, image_weight)
        info["first_stage_ndcg_at_10"] = round(first, 4)
    info["label_source"] = source
    info["config"] = index.cfg.as_dict()
    info["seconds"] = round(time.perf_counter() - started, 1)
    return SearchModel(index, None, info)


def fit(model: SearchModel, snapshot: str | Path, cfg: SearchConfig) -> SearchModel:
    """The re-ranker on the prepared model's training labels: point-in-time rows with the
    shoppers' interest tags from the log, or rows of the judged queries; and every
    shopper's tags as of the training time. Without labels (or ``rerank = false``) the
    model answers with its fused scores."""
    started = time.perf_counter()
    snap = Snapshot.open(snapshot)
    if model.info.get("snapshot_id") != snap.id:
        raise ShopMLError(
            f"the prepared search model was indexed on snapshot {model.info.get('snapshot_id')}, "
            f"not on {snap.id} ({snap.path})"
        )
    info = dict(model.info)
    index = model.index
    until = _epoch(info.get("train_until"))
    source = info.get("label_source")
    booster = profiles = tags = None
    rows = None
    if source == "queries":
        data_q = logged(snap, index, end=until)
        before = _queries_before(snap, until)
        log_ = before if before is not None else pd.DataFrame()
        asof = AsOf(index, load_timeline(snap), log_, FeatureConfig())
        rows = pit_rows(asof, data_q) if cfg.rerank else None
        end = min(until, snapshot_end(snap).timestamp())
        _, _, profiles, tags = next(asof.days(np.array([end])))
    elif source == "judgments" and cfg.rerank:
        data_j, _ = split_judged(judged(snap, index), cfg.judged_holdout)
        if len(data_j.queries) >= 2:
            rows = ranker.rows(index, data_j.queries, data_j.labels)
    if rows is not None:
        booster, curves = ranker.fit(*ranker.split(rows, cfg.validation_share, cfg.seed), cfg)
        info["ranker_rounds"] = int(booster.best_iteration or booster.current_iteration())
        info["ranker_validation_ndcg"] = round(float(max(curves["validation"])), 4)
    info["seconds"] = round(float(info.get("seconds", 0.0)) + time.perf_counter() - started, 1)
    return SearchModel(index, booster, info, profiles, tags)


def train(snapshot: str | Path, cfg: SearchConfig, *, until: float | None = None) -> SearchModel:
    """``shopml search train``: :func:`prepare` then :func:`fit`."""
    return fit(prepare(snapshot, cfg, until=until), snapshot, cfg)


def _iso(t: float) -> str:
    return pd.Timestamp(t, unit="s", tz="UTC").isoformat()


def _epoch(iso: str | None) -> float:
    return float("inf") if not iso else pd.Timestamp(iso).timestamp()


def _queries_before(snap: Snapshot, until: float) -> pd.DataFrame | None:
    if not snap.rows("queries"):
        return None
    q = snap.read("queries").to_pandas()
    if np.isfinite(until):
        q = q[q["ts"] < pd.Timestamp(until, unit="s", tz="UTC")].reset_index(drop=True)
    return q


def _training_labels(
    snap: Snapshot,
    index: SearchIndex,
    cfg: SearchConfig,
    source: str | None,
    until: float,
    info: dict[str, Any],
) -> tuple[list[str], list[dict[int, int]]]:
    if source == "queries":
        data_q = logged(snap, index, end=until)
        info["labels"] = f"query log: {len(data_q)} clicked queries (click 1, cart 2, purchase 3)"
        return data_q.texts, data_q.labels
    if source == "judgments":
        data_j, held = split_judged(judged(snap, index), cfg.judged_holdout)
        info["labels"] = (
            f"judgments: {len(data_j.queries)} queries, {len(data_j.truth)} judged items "
            f"({len(held.queries)} held out for evaluation)"
        )
        return data_j.queries, data_j.labels
    info["labels"] = "none: no judgments and no clicked queries; results are the fused first stage"
    return [], []


def label_source(
    snap: Snapshot, index: SearchIndex, cfg: SearchConfig, *, until: float = np.inf
) -> str | None:
    """Where the re-ranker's labels come from: "judgments", "queries" (the log before
    ``until``) or None."""
    has_j = snap.has("judgments") and snap.rows("judgments") > 0
    n_log = (
        len(logged(snap, index, end=until)) if snap.rows("queries") and snap.rows("events") else 0
    )
    if cfg.labels == "judgments":
        if not has_j:
            raise ContractError(
                str(snap.path), "labels = 'judgments' but the snapshot has no judgments"
            )
        return "judgments"
    if cfg.labels == "queries":
        if n_log < 2:
            raise ContractError(
                str(snap.path), "labels = 'queries' but the query log has no clicked queries"
            )
        return "queries"
    if n_log >= cfg.min_logged_queries:
        return "queries"
    return "judgments" if has_j else None


def run_file(model: SearchModel, queries: str | Path, *, k: int = 10) -> pd.DataFrame:
    """Answer every row of a CSV/parquet file with a ``query`` column (``user_id``
    optional): rows query, user_id, rank, item_id, score, fallback."""
    src = Path(queries)
    if (why := why_not_a_file(src)) is not None:
        raise ShopMLError(f"queries file {src} {why}")
    if src.suffix == ".parquet":
        df = pd.read_parquet(src)
    else:
        df = pd.read_csv(src, dtype=str, keep_default_na=False)
    return answer_frame(model, df, k=k, source=src.name)


def answer_frame(
    model: SearchModel, df: pd.DataFrame, *, k: int = 10, source: str = "input"
) -> pd.DataFrame:
    """Answer each row of ``df`` (``query``, optional ``user_id``): rows query, user_id,
    rank, item_id, score, fallback. An empty query is refused naming its row."""
    if "query" not in df.columns:
        raise ContractError(
            source, f"no `query` column (columns: {', '.join(map(str, df.columns))})"
        )
    users = df["user_id"] if "user_id" in df.columns else pd.Series([None] * len(df))
    parts = []
    for i, (q, u) in enumerate(zip(df["query"], users, strict=True)):
        if not isinstance(q, str) or not q.strip():
            raise ContractError(source, f"row {i + 2}, column query: empty query")
        res, c = model.search(q, k=k, user=u if isinstance(u, str) and u else None)
        parts.append(
            res[["rank", "item_id", "score"]].assign(query=q, user_id=u, fallback=c.fallback)
        )
    cols = ["query", "user_id", "rank", "item_id", "score", "fallback"]
    if not parts:
        return pd.DataFrame(columns=cols)
    return pd.concat(parts, ignore_index=True)[cols]
