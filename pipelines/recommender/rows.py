"""Candidates to ranker rows: the union of every source's list and the features.

For a batch of users every generator scores the whole catalog once; each contributes its
top ``per_source[name]`` unseen, existing items; the union (deduplicated) is the user's
candidate list. Every candidate then gets every source's score (not only the sources
that listed it) and each source's rank (missing when it did not list it), plus user,
item and user x item features. All of them are computed from the history the generators
were fitted on and from feature-store rows at the history's time, so a row for time t
sees nothing from t onwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from feature_store.services import RECOMMENDER_ITEM_FEATURES, RECOMMENDER_USER_FEATURES
from pipelines.candidates import Generator, UserBatch
from pipelines.candidates.base import Context, lookup, shared_top, sparse_top, top_n
from pipelines.candidates.repeat import repeat_parts
from pipelines.candidates.repeats import Repeats
from pipelines.candidates.repeats import banned as seen_banned
from pipelines.data.timeline import DAY

# Feature-store columns the ranker reads when a feature build is available: the
# `recommender_ranker` feature service lists exactly these (feature_store/services.py).
STORE_USER_FEATURES = RECOMMENDER_USER_FEATURES
STORE_ITEM_FEATURES = RECOMMENDER_ITEM_FEATURES
CATEGORICAL = ("item_category", "item_top_category", "user_gender", "user_segment")


@dataclass
class ItemSide:
    """Catalog attributes by item code, shared by training and serving."""

    category: np.ndarray  # code into categories
    top_category: np.ndarray  # code into top_categories
    brand: np.ndarray  # code into brands, -1 none
    price: np.ndarray
    created: np.ndarray  # epoch seconds
    categories: np.ndarray
    top_categories: np.ndarray
    brands: np.ndarray
    # per item: its title (object array; saved beside the ids, not in the numeric arrays)
    titles: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))
    # per item: its picture's URL, None where the catalog has none (saved like the titles)
    image_urls: np.ndarray = field(default_factory=lambda: np.array([], dtype=object))

    def title(self, item: int) -> str | None:
        return str(self.titles[item]) if item < len(self.titles) else None


@dataclass
class StoreFeatures:
    """Feature-store values as of the history's time, as arrays by user / item code."""

    users: np.ndarray  # (n_users, len(STORE_USER_FEATURES)) float32, NaN missing
    items: np.ndarray  # (n_items, len(STORE_ITEM_FEATURES))


@dataclass
class Candidates:
    """Candidate rows of one batch: row r is (batch position ``pos[r]``, item ``item[r]``),
    grouped by user in batch order."""

    pos: np.ndarray
    item: np.ndarray
    scores: np.ndarray  # (rows, sources) every source's score
    ranks: np.ndarray  # (rows, sources) 1-based rank in the source's list, NaN if absent

    def __len__(self) -> int:
        return len(self.pos)


def union(
    generators: dict[str, Generator],
    batch: UserBatch,
    per_source: dict[str, int],
    allowed: np.ndarray,
    exclude_seen: bool = True,
    excluded: sp.csr_matrix | None = None,
    repeat_allowed: np.ndarray | None = None,
) -> Candidates:
    """Each source's top list, deduplicated per user, with every source's score and rank.
    Items a user has seen (``exclude_seen``; except items ``repeat_allowed`` lets be shown
    again) or that ``excluded`` lists for them (one row per batch user) are never
    candidates."""
    n_items = len(allowed)
    said = {name: gen.answers(batch) for name, gen in generators.items()}
    shared = {name: gen.shared(batch) for name, gen in generators.items()}
    # dense scores over the catalog, except for sources with an approximate index (they
    # are asked for their top list and scored on the candidates only) and shared ones
    sparse = {
        name: gen.batch_sparse(batch)
        for name, gen in generators.items()
        if shared[name] is None and gen.ann is None
    }
    full = {
        name: gen.scores(batch)
        for name, gen in generators.items()
        if shared[name] is None and gen.ann is None and sparse[name] is None
    }
    banned = seen_banned(batch.rows, repeat_allowed) if exclude_seen else None
    if excluded is not None and excluded.nnz:
        banned = excluded if banned is None else (banned + excluded).tocsr()
    keys, rank_keys, rank_vals = [], [], []
    for s, name in enumerate(generators):
        n = per_source.get(name, 0)
        if n <= 0:
            continue
        group_scores = shared[name]
        if group_scores is not None:
            idx = shared_top(*group_scores, n, banned, allowed)
        elif name in full:
            # the scores of banned and disallowed items are never read again
            idx, _ = top_n(full[name], n, banned, allowed, overwrite=True)
        elif sparse.get(name) is not None:
            idx, _ = sparse_top(sparse[name], n, banned, allowed)
        else:
            idx, _ = generators[name].approximate(batch, n, banned, allowed)
        idx[~said[name]] = -1
        pos = np.repeat(np.arange(len(batch)), idx.shape[1]).reshape(idx.shape)
        ok = idx >= 0
        k = pos[ok].astype(np.int64) * n_items + idx[ok]
        keys.append(k)
        rank_keys.append(k * len(generators) + s)
        rank_vals.append(np.broadcast_to(np.arange(1, idx.shape[1] + 1), idx.shape)[ok])
    if not keys:
        empty = np.empty(0, dtype=np.int64)
        shape = (0, len(generators))
        return Candidates(empty, empty, np.empty(shape, np.float32), np.empty(shape, np.float32))
    uniq = np.unique(np.concatenate(keys))
    pos, item = uniq // n_items, uniq % n_items

    def gathered(name: str) -> np.ndarray:
        group_scores = shared[name]
        if group_scores is not None:
            group, rows = group_scores
            return rows[group[pos], item]
        if name in full:
            return full[name][pos, item]
        matrix = sparse.get(name)
        if matrix is not None:
            return lookup(matrix, pos, item, generators[name].missing_score)
        return generators[name].pair_scores(batch, pos, item)

    scores = np.column_stack(
        [np.where(said[name][pos], gathered(name), np.nan) for name in generators]
    ).astype(np.float32)
    ranks = np.full((len(uniq), len(generators)), np.nan, dtype=np.float32)
    rk = np.concatenate(rank_keys)
    row = np.searchsorted(uniq, rk // len(generators))
    ranks[row, rk % len(generators)] = np.concatenate(rank_vals)
    return Candidates(pos=pos, item=item, scores=scores, ranks=ranks)


def _affinity(rows: sp.csr_matrix, codes: np.ndarray, n_codes: int) -> np.ndarray:
    """Share of each user's confidence on each code (category/brand), (users, n_codes)."""
    valid = codes >= 0
    onehot = sp.csr_matrix(
        (np.ones(int(valid.sum()), dtype=np.float32), (np.flatnonzero(valid), codes[valid])),
        shape=(len(codes), max(n_codes, 1)),
    )
    counts = np.asarray((rows @ onehot).toarray(), dtype=np.float32)
    total = np.asarray(rows.sum(axis=1)).ravel()[:, None]
    return np.where(total > 0, counts / np.maximum(total, 1e-12), 0.0).astype(np.float32)


def _relative_to_best(scores: np.ndarray, pos: np.ndarray, n_users: int) -> np.ndarray:
    """Each score divided by the user's best score from that source: generators' raw
    scales grow with the size of the history, which differs between training and serving."""
    if not len(pos):
        return np.full(scores.shape, np.nan, dtype=np.float32)
    starts = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])  # rows are grouped by user
    magnitude = np.where(np.isfinite(scores), np.abs(scores), -np.inf)
    best = np.maximum.reduceat(magnitude, starts, axis=0)
    best_per_row = np.repeat(best, np.diff(np.r_[starts, len(pos)]), axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (scores / np.maximum(best_per_row, 1e-12)).astype(np.float32)


def _within_user_z(scores: np.ndarray, pos: np.ndarray, n_users: int) -> np.ndarray:
    """Each score standardised over the user's own candidates (scales differ by user)."""
    out = np.full(scores.shape, np.nan, dtype=np.float32)
    for s in range(scores.shape[1]):
        v = scores[:, s].astype(np.float64)
        ok = np.isfinite(v)
        n = np.bincount(pos[ok], minlength=n_users)
        mean = np.bincount(pos[ok], weights=v[ok], minlength=n_users) / np.maximum(n, 1)
        sq = np.bincount(pos[ok], weights=v[ok] ** 2, minlength=n_users) / np.maximum(n, 1)
        std = np.sqrt(np.maximum(sq - mean**2, 0.0))
        out[ok, s] = ((v[ok] - mean[pos[ok]]) / np.maximum(std[pos[ok]], 1e-9)).astype(np.float32)
    return out


def _repeat_columns(
    repeats: Repeats | None, codes: np.ndarray, item: np.ndarray
) -> list[np.ndarray]:
    """Times bought, days since the last purchase, that ÷ the typical interval, the item's
    and its category's repurchase rates, and the share of the shopper's purchases that
    were of items they had bought before (NaN without purchase statistics)."""
    if repeats is None:
        return [np.full((len(item), 1), np.nan, dtype=np.float32)] * 6
    buys, days, ratio = repeat_parts(repeats, codes, item)
    users, at = np.unique(codes, return_inverse=True)
    rows = repeats.buys[np.maximum(users, 0)]
    total = np.asarray(rows.sum(axis=1)).ravel()
    share = np.where(
        (users >= 0) & (total > 0), (total - np.diff(rows.indptr)) / np.maximum(total, 1), np.nan
    )
    return [
        buys[:, None],
        days[:, None],
        ratio[:, None],
        repeats.item_rate[item][:, None],
        repeats.category_rate[item][:, None],
        share[at].astype(np.float32)[:, None],
    ]


def feature_names(sources: list[str], with_store: bool) -> list[str]:
    names = [f"{s}_score" for s in sources] + [f"{s}_rank" for s in sources]
    names += [f"{s}_zscore" for s in sources]
    names += [
        "n_sources",
        "user_events",
        "user_items",
        "user_days_since_last",
        "user_age",
        "user_gender",
        "user_segment",
        "item_popularity",
        "item_trending",
        "item_age_days",
        "item_log_price",
        "item_category",
        "item_top_category",
        "category_affinity",
        "top_category_affinity",
        "brand_affinity",
        "price_vs_user",
        "time_gap_days",
        "buy_count",
        "days_since_bought",
        "due_ratio",
        "item_repurchase_rate",
        "category_repurchase_rate",
        "user_repeat_share",
    ]
    if with_store:
        names += [f"store_user_{n}" for n in STORE_USER_FEATURES]
        names += [f"store_item_{n}" for n in STORE_ITEM_FEATURES]
    return names


def features(
    cands: Candidates,
    batch: UserBatch,
    ctx: Context,
    items: ItemSide,
    genders: np.ndarray,
    store: StoreFeatures | None,
) -> np.ndarray:
    """The ranker's feature matrix for ``cands`` (columns as ``feature_names``)."""
    h = ctx.history
    pos, item = cands.pos, cands.item
    codes = batch.codes[pos]
    known = codes >= 0
    safe = np.where(known, codes, 0)
    rows = batch.rows
    n_rows = np.diff(rows.indptr)
    # a folded-in user's events are the items they were given (training never sees 0 events
    # with items)
    in_history = batch.known[pos]
    user_events = np.where(in_history, h.user_events[safe], n_rows[pos]).astype(np.float32)
    since = np.where(known, (h.now - h.user_last[safe]) / DAY, np.nan)
    gender = pd.Index(genders).get_indexer(pd.Index(np.asarray(batch.gender, dtype=object)))
    log_price = np.log(np.maximum(items.price, 1e-6)).astype(np.float32)
    weight_sum = np.asarray(rows.sum(axis=1)).ravel()
    user_log_price = np.where(
        weight_sum > 0, (rows @ log_price) / np.maximum(weight_sum, 1e-12), np.nan
    )
    cat_aff = _affinity(rows, items.category, len(items.categories))
    top_aff = _affinity(rows, items.top_category, len(items.top_categories))
    brand_aff = _affinity(rows, items.brand, len(items.brands))
    brand_of = items.brand[item]
    cols = [
        _relative_to_best(cands.scores, pos, len(batch)),
        cands.ranks,
        _within_user_z(cands.scores, pos, len(batch)),
        np.isfinite(cands.ranks).sum(axis=1, keepdims=True),
        user_events[:, None],
        n_rows[pos][:, None],
        since[:, None],
        np.asarray(batch.age, dtype=float)[pos][:, None],
        np.where(gender < 0, np.nan, gender)[pos][:, None],
        np.where(batch.segment < 0, np.nan, batch.segment)[pos][:, None],
        (h.popularity / max(float((h.user_events > 0).sum()), 1.0))[item][:, None],
        (h.trending / max(float(h.trending.sum()), 1e-12))[item][:, None],
        ((h.now - items.created[item]) / DAY)[:, None],
        log_price[item][:, None],
        items.category[item][:, None],
        items.top_category[item][:, None],
        cat_aff[pos, items.category[item]][:, None],
        top_aff[pos, items.top_category[item]][:, None],
        np.where(brand_of >= 0, brand_aff[pos, np.maximum(brand_of, 0)], np.nan)[:, None],
        (log_price[item] - user_log_price[pos])[:, None],
        ((h.item_mean_ts[item] - np.where(known, h.user_mean_ts[safe], np.nan)) / DAY)[:, None],
        *_repeat_columns(h.repeats, np.where(in_history, codes, -1), item),
    ]
    if store is not None:
        user_store = np.where(known[:, None], store.users[safe], np.nan)
        if batch.store_users is not None:  # fresher values from the online store
            fresh = np.asarray(batch.store_users, dtype=np.float32)[pos]
            given = ~np.all(np.isnan(fresh), axis=1)
            user_store = np.where(given[:, None], fresh, user_store)
        cols += [user_store, store.items[item]]
    return np.hstack([np.asarray(c, dtype=np.float32) for c in cols])
