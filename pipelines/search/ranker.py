"""The search re-ranker: LambdaMART over (query, item) features of the fused candidates,
and the tuning of the first stage's field weights and fusion weight.

Labels are graded judgments: ``label = round(relevance - lowest relevance)`` (CrowdFlower's
median relevance 1-4 becomes 0-3), so LightGBM's default gains ``2^label - 1`` are the
benchmark's ``2^(r-1) - 1``. Candidates nobody judged are label 0 (whole-catalog
evaluation: unjudged = not relevant).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from pipelines.ranking.lambdamart import fit_lambdamart, predict
from pipelines.search import fusion
from pipelines.search.config import SearchConfig
from pipelines.search.engine import Candidates, SearchIndex
from pipelines.search.lexical import FIELDS, combine
from pipelines.search.personal import PERSONAL
from pipelines.search.text import STOP_WORDS, words

log = logging.getLogger(__name__)

FEATURES = (
    *(f"bm25_{f}" for f in FIELDS),
    *(f"bm25_{f}_share" for f in FIELDS),
    "lexical", "cosine", "fused", "lexical_share", "cosine_gap", "fused_share",
    "fused_rank", "lexical_rank", "semantic_rank", "title_words", "title_coverage",
    "title_terms", "field_terms", "title_bigrams", "title_words_exact", "all_terms_in_title", "query_terms", "corrected",
    "intent", "popularity", "conversion", "log_price",
    *PERSONAL,
)  # fmt: skip

# A query's labels: item row -> integer grade (0 = not relevant)
Labels = Mapping[int, int]


def features(index: SearchIndex, c: Candidates, personal: np.ndarray | None = None) -> np.ndarray:
    """One row per candidate, the columns of :data:`FEATURES`; ``personal`` holds the
    shopper's columns (:data:`PERSONAL`), missing (NaN) when not given."""
    n = len(c)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    first = FEATURES.index(PERSONAL[0])
    x[:, first:] = np.nan if personal is None else personal
    col = {name: j for j, name in enumerate(FEATURES)}
    for f in FIELDS:
        if f in c.fields:
            x[:, col[f"bm25_{f}"]] = c.fields[f]
    n_terms = max(len(set(c.terms)), 1)
    title = c.matches.get("title", np.zeros(n))
    best = np.max(np.stack(list(c.matches.values())), axis=0) if c.matches else np.zeros(n)
    for f, v in c.fields.items():  # a query's scores against its best candidate's
        x[:, col[f"bm25_{f}_share"]] = v / max(float(v.max()), 1e-9)
    x[:, col["lexical_share"]] = c.lexical / max(float(c.lexical.max()), 1e-9) if n else 0
    x[:, col["cosine_gap"]] = float(c.cosine.max()) - c.cosine if n else 0
    x[:, col["fused_share"]] = c.fused / max(float(c.fused.max()), 1e-9) if n else 0
    title_len = index.title_terms[c.items]
    x[:, col["title_words"]] = title_len
    x[:, col["title_coverage"]] = title / np.maximum(title_len, 1)
    x[:, col["title_bigrams"]], x[:, col["title_words_exact"]] = phrase_matches(index, c)
    x[:, col["lexical"]] = c.lexical
    x[:, col["cosine"]] = c.cosine
    x[:, col["fused"]] = c.fused
    x[:, col["fused_rank"]] = np.arange(1, n + 1)
    x[:, col["lexical_rank"]] = c.lexical_rank
    x[:, col["semantic_rank"]] = c.semantic_rank
    x[:, col["title_terms"]] = title / n_terms
    x[:, col["field_terms"]] = best / n_terms
    x[:, col["all_terms_in_title"]] = title >= len(set(c.terms)) if c.terms else 0
    x[:, col["query_terms"]] = len(set(c.terms))
    x[:, col["corrected"]] = c.corrected is not None
    x[:, col["intent"]] = c.intent
    x[:, col["popularity"]] = np.log1p(index.popularity[c.items])
    x[:, col["conversion"]] = index.conversion[c.items]
    x[:, col["log_price"]] = np.log1p(np.maximum(index.price[c.items], 0.0))
    return x


def phrase_matches(index: SearchIndex, c: Candidates) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate: the share of the query's word pairs that its title holds in order,
    and the share of the query's words (unstemmed) its title holds."""
    qw = [w for w in words(c.corrected or c.query) if w not in STOP_WORDS]
    pairs = set(itertools.pairwise(qw))
    qset = set(qw)
    bigram = np.zeros(len(c), dtype=np.float32)
    exact = np.zeros(len(c), dtype=np.float32)
    if not qset:
        return bigram, exact
    for j, row in enumerate(c.items):
        title, title_pairs = index.title_words(int(row))
        exact[j] = len(qset & title) / len(qset)
        if pairs:
            bigram[j] = len(pairs & title_pairs) / len(pairs)
    return bigram, exact


@dataclass
class Rows:
    x: np.ndarray
    y: np.ndarray
    groups: np.ndarray


class RowBuilder:
    """Collects one group of ranker rows per query."""

    def __init__(self) -> None:
        self.xs: list[np.ndarray] = []
        self.ys: list[np.ndarray] = []

    def add(
        self,
        index: SearchIndex,
        c: Candidates,
        labels: Labels,
        personal: np.ndarray | None = None,
        unlabelled: set[int] | frozenset[int] = frozenset(),
    ) -> None:
        if not len(c):
            return
        x = features(index, c, personal)
        y = np.array([labels.get(int(i), 0) for i in c.items], dtype=np.float64)
        if unlabelled:
            keep = ~np.isin(c.items, np.fromiter(unlabelled, dtype=np.int64)) | (y > 0)
            x, y = x[keep], y[keep]
        self.xs.append(x)
        self.ys.append(y)

    def rows(self) -> Rows:
        if not self.xs:
            return Rows(
                np.zeros((0, len(FEATURES)), np.float32), np.zeros(0), np.zeros(0, np.int64)
            )
        groups = np.array([len(y) for y in self.ys], dtype=np.int64)
        return Rows(np.concatenate(self.xs), np.concatenate(self.ys), groups)


def rows(index: SearchIndex, queries: list[str], labels: Sequence[Labels]) -> Rows:
    b = RowBuilder()
    for q, lab in zip(queries, labels, strict=True):
        b.add(index, index.candidates(q), lab)
    return b.rows()


def split(rows_: Rows, share: float, seed: int) -> tuple[Rows, Rows]:
    """(training, validation) rows: a ``share`` of the query groups, chosen by ``seed``."""
    n = len(rows_.groups)
    valid = np.zeros(n, dtype=bool)
    valid[np.random.default_rng(seed).permutation(n)[: max(1, round(share * n))]] = True
    per_row = np.repeat(valid, rows_.groups)

    def part(v: bool) -> Rows:
        m = per_row == v
        return Rows(rows_.x[m], rows_.y[m], rows_.groups[valid == v])

    return part(False), part(True)


def without_personal(rows_: Rows) -> Rows:
    """The same rows with the shopper's columns missing (the unpersonalised ranker's)."""
    x = rows_.x.copy()
    x[:, FEATURES.index(PERSONAL[0]) :] = np.nan
    return Rows(x, rows_.y, rows_.groups)


def fit(
    train_rows: Rows, valid_rows: Rows, cfg: SearchConfig
) -> tuple[Any, dict[str, list[float]]]:
    log.info(
        "search ranker: %s training rows (%d queries), %s validation rows (%d queries)",
        f"{len(train_rows.y):,}", len(train_rows.groups), f"{len(valid_rows.y):,}", len(valid_rows.groups),
    )  # fmt: skip
    return fit_lambdamart(train_rows, valid_rows, list(FEATURES), cfg)


def rerank(
    index: SearchIndex, booster: Any, c: Candidates, personal: np.ndarray | None = None
) -> np.ndarray:
    """Re-ranker scores of ``c``'s candidates (the caller sorts)."""
    if not len(c):
        return np.zeros(0)
    return predict(booster, features(index, c, personal))


# -- first-stage tuning ---------------------------------------------------------------


def _ndcg_at(
    scores: np.ndarray, rows_: np.ndarray, gains: np.ndarray, ideal: float, k: int
) -> float:
    if ideal <= 0 or not len(rows_):
        return 0.0
    top = np.lexsort((rows_, -scores))[:k]
    return float((gains[top] / np.log2(np.arange(2, len(top) + 2))).sum() / ideal)


@dataclass
class _Prepared:
    rows: np.ndarray  # matched candidate rows (lexical > 0 anywhere or semantic >= min)
    fields: dict[str, np.ndarray]
    cosine: np.ndarray  # the text cosine
    image: np.ndarray | None  # the image cosine (NaN for an item without an image)
    gains: np.ndarray
    ideal: float

    def semantic(self, weight: float) -> np.ndarray:
        if self.image is None or weight <= 0:
            return self.cosine
        mixed = (1 - weight) * self.cosine + weight * self.image
        return np.where(np.isnan(self.image), self.cosine, mixed)


def _prepare(
    index: SearchIndex,
    queries: list[str],
    labels: Sequence[Labels],
    k: int,
    image_weights: Sequence[float] = (),
) -> list[_Prepared]:
    out = []
    for q, lab in zip(queries, labels, strict=True):
        fields, cosine, image = index.raw_parts(q)
        any_lex = np.zeros(len(cosine), dtype=bool)
        for s in fields.values():
            any_lex |= s > 0
        close = cosine >= index.cfg.min_cosine
        for w in image_weights:
            close |= index.mix(cosine, image, w) >= index.cfg.min_cosine
        r = np.flatnonzero(any_lex | close)
        g = np.array([2.0 ** lab.get(int(i), 0) - 1.0 for i in r])
        ideal_g = np.sort(np.array([2.0**v - 1.0 for v in lab.values()]))[::-1][:k]
        ideal = float((ideal_g / np.log2(np.arange(2, len(ideal_g) + 2))).sum())
        img = None
        if image is not None and index.has_image is not None:
            img = np.where(index.has_image[r], image[r], np.nan).astype(np.float64)
        out.append(_Prepared(r, {f: s[r] for f, s in fields.items()}, cosine[r], img, g, ideal))
    return out


def _score(
    prep: list[_Prepared],
    weights: dict[str, float],
    alpha: float,
    cfg: SearchConfig,
    k: int,
    image_weight: float = 0.0,
) -> float:
    total = 0.0
    for p in prep:
        lex = combine(p.fields, weights) if p.fields else np.zeros(len(p.rows), np.float32)
        semantic = p.semantic(image_weight)
        m = (lex > 0) | (semantic >= cfg.min_cosine)
        fused = fusion.fuse(lex[m], semantic[m], cfg.fusion, alpha, cfg.rrf_k)
        total += _ndcg_at(fused, p.rows[m], p.gains[m], p.ideal, k)
    return total / max(len(prep), 1)


class Tuned(NamedTuple):
    weights: dict[str, float]
    alpha: float
    ndcg: float  # the first stage's mean nDCG@k on the tuning queries
    image_weight: float


def tune(
    index: SearchIndex,
    queries: list[str],
    labels: Sequence[Labels],
    *,
    k: int = 10,
    multipliers: Iterable[float] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0),
    alphas: Iterable[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
    image_weights: Iterable[float] = (0.0,),
) -> Tuned:
    """Field weights (coordinate search, two passes, title fixed at its weight) on the
    lexical ranking, then the fusion weight ``alpha`` jointly with the image weight — the
    configured one or ``image_weights`` (default: 0, images off), when the catalog has
    image embeddings — all for mean nDCG@k of the first stage on ``queries``."""
    cfg = index.cfg
    grid = sorted({*image_weights, cfg.image_weight}) if index.images is not None else []
    prep = _prepare(index, queries, labels, k, grid)
    present = [f for f in FIELDS if f in index.lexical.indexes]
    weights = {f: float(cfg.field_weights.get(f, 0.0)) for f in present}
    lexical_only = 1.0
    best = _score(prep, weights, lexical_only, cfg, k)
    mults = tuple(multipliers)
    for _ in range(2):
        for f in present:
            if f == "title" and weights.get("title", 0) > 0:
                continue
            base = weights[f] if weights[f] > 0 else 1.0
            for m in mults:
                trial = {**weights, f: base * m}
                if not any(v > 0 for v in trial.values()):
                    continue
                s = _score(prep, trial, lexical_only, cfg, k)
                if s > best + 1e-9:
                    best, weights = s, trial
    alpha, image_weight, best_alpha = cfg.alpha, cfg.image_weight, -1.0
    for w in grid or [cfg.image_weight]:
        for a in alphas:
            s = _score(prep, weights, float(a), cfg, k, w)
            if s > best_alpha + 1e-9:
                best_alpha, alpha, image_weight = s, float(a), float(w)
    log.info(
        "search tuning: weights %s, alpha %.2f, image weight %.2f, first-stage nDCG@%d %.4f",
        weights,
        alpha,
        image_weight,
        k,
        best_alpha,
    )
    return Tuned(weights, alpha, best_alpha, image_weight)
