"""What every candidate generator shares: the interaction history, the user batch, the interface.

A generator is fitted on a :class:`History` (the events before a cutoff, as a sparse
users x items matrix of confidences) and answers for a :class:`UserBatch`: the users'
codes (``-1`` for a user the fitted model has never seen), their interaction rows (so a
new user can be folded in from recent events without retraining) and their
demographics (so a user with no events still gets an answer).

Generators score the whole catalog for a batch of users as a dense array; the batch
size keeps that array small (1,000 users x 50,000 items is 200 MB).
"""

from __future__ import annotations

import json
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.candidates.ann import ItemIndex
from pipelines.candidates.config import CandidateConfig
from pipelines.candidates.history import History
from pipelines.candidates.repeats import banned
from pipelines.io import write_json


@dataclass
class UserBatch:
    """The users a generator answers for.

    ``codes`` index the fitted history (``-1``: unknown to the model); ``rows`` are the
    users' interaction rows over the catalog (empty for a user with no events).
    """

    codes: np.ndarray
    rows: sp.csr_matrix
    age: np.ndarray  # float, NaN unknown
    gender: np.ndarray  # object, None unknown
    region: np.ndarray  # object, None unknown
    segment: np.ndarray  # int, -1 unknown
    in_history: np.ndarray | None = None  # bool: rows come from the fitted history
    # feature-store user values that replace the model's (a fresher online store); a row
    # of NaN keeps the model's own
    store_users: np.ndarray | None = None
    # what generators derive from the batch and share (recent rows, profiles): computed
    # once per batch, not once per generator and call
    memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.codes)

    def remember(self, key: Any, compute: Callable[[], Any]) -> Any:
        """``compute()``, once per batch and ``key``; callers must not modify the result."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]

    def take(self, idx: np.ndarray) -> UserBatch:
        """The users at positions ``idx``."""
        return UserBatch(
            codes=self.codes[idx],
            rows=self.rows[idx],
            age=np.asarray(self.age)[idx],
            gender=np.asarray(self.gender, dtype=object)[idx],
            region=np.asarray(self.region, dtype=object)[idx],
            segment=np.asarray(self.segment)[idx],
            in_history=None if self.in_history is None else self.in_history[idx],
            store_users=None if self.store_users is None else self.store_users[idx],
        )

    def recent(self, history: History, keep: int) -> sp.csr_matrix:
        """Each user's rows keeping, for users in ``history``, their ``keep`` most recently
        touched items (folded-in users keep the rows they were given)."""
        return self.remember(("recent", id(history), keep), lambda: self._recent(history, keep))

    def _recent(self, history: History, keep: int) -> sp.csr_matrix:
        known = self.known
        if not known.any():
            return self.rows
        recent = history.recent_rows(np.where(known, self.codes, 0), keep)
        return (rows_where(recent, known) + rows_where(self.rows, ~known)).tocsr()

    @property
    def known(self) -> np.ndarray:
        """Users whose rows are their events in the fitted history (the others, if they
        have rows, are folded in from them)."""
        if self.in_history is not None:
            return self.in_history
        return (self.codes >= 0) & (np.diff(self.rows.indptr) > 0)


def rows_where(m: sp.spmatrix, keep: np.ndarray) -> sp.csr_matrix:
    """A float32 CSR copy of ``m`` with the rows where ``keep`` is False emptied (no
    explicit zeros): what ``diags(keep) @ m`` gives, without a sparse product."""
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    out.data[~np.repeat(np.asarray(keep, dtype=bool), np.diff(out.indptr))] = 0
    out.eliminate_zeros()
    return out


def top_n(
    scores: np.ndarray, n: int, banned: sp.csr_matrix | None, allowed: np.ndarray | None,
    *, overwrite: bool = False,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The ``n`` best items per row of ``scores`` (best first), skipping ``banned``
    entries and items not ``allowed``; rows with fewer eligible items pad with -1/NaN.
    ``overwrite``: a float32 ``scores`` may be changed (banned and disallowed entries
    set to -inf) instead of copied."""
    if not (overwrite and scores.dtype == np.float32 and scores.flags.writeable):
        scores = np.array(scores, dtype=np.float32, copy=True)
    if allowed is not None:
        scores[:, ~allowed] = -np.inf
    if banned is not None and banned.nnz:
        rows = np.repeat(np.arange(banned.shape[0]), np.diff(banned.indptr))
        scores[rows, banned.indices] = -np.inf
    n = min(n, scores.shape[1])
    if n <= 0:
        empty = np.empty((scores.shape[0], 0))
        return empty.astype(np.int64), empty.astype(np.float32)
    if scores.shape[1] >= max(SELECT_MIN_ITEMS, SELECT_BLOCKS * n):
        return _block_top(scores, n)
    part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    best = np.take_along_axis(part_scores, order, axis=1)
    bad = ~np.isfinite(best)
    idx[bad] = -1
    best[bad] = np.nan
    return idx.astype(np.int64), best


SELECT_MIN_ITEMS = 4096  # from this many columns top_n selects through block maxima
SELECT_BLOCKS = 4  # blocks per wanted item


def best_first(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_cols: int) -> np.ndarray:
    """The order of the (row, col, value) entries by row, then value high to low, then
    col: ``np.lexsort((cols, -vals, rows))``, as one sort of packed 64-bit keys where the
    row and col codes fit beside the 32 bits of a float32 (always for a batch of users over
    a catalog), else that lexsort. ``vals`` must not be NaN; (row, col) pairs unique."""
    rows = np.asarray(rows, dtype=np.int64)
    col_bits = max(int(n_cols - 1).bit_length(), 1)
    row_bits = max(int(rows.max(initial=0)).bit_length(), 1)
    if row_bits + 32 + col_bits > 63:
        return np.lexsort((cols, -vals, rows))
    bits = (np.asarray(vals, dtype=np.float32) + np.float32(0.0)).view(np.uint32)  # -0 is +0
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))  # orders like the floats
    descending = (np.uint32(0xFFFFFFFF) - ascending).astype(np.int64)
    key = (rows << (32 + col_bits)) | (descending << col_bits) | np.asarray(cols, dtype=np.int64)
    return np.argsort(key)


def _top_entries(
    rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, n_rows: int, n_cols: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best (col, value) entries of each row, best first and ties by col, as
    (n_rows, n) arrays padded with -1/NaN; values are finite, (row, col) pairs unique, in
    any order."""
    n = max(n, 0)
    counts = np.bincount(rows, minlength=n_rows)
    order = best_first(rows, cols, vals, n_cols)
    rows, cols, vals = rows[order], cols[order], vals[order]
    rank = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    keep = rank < n
    idx = np.full((n_rows, n), -1, dtype=np.int64)
    best = np.full((n_rows, n), np.nan, dtype=np.float32)
    idx[rows[keep], rank[keep]] = cols[keep]
    best[rows[keep], rank[keep]] = vals[keep]
    return idx, best


def _block_top(scores: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_n`'s exact selection for a wide array, without partitioning every row
    of the catalog: the columns are cut into ``SELECT_BLOCKS * n`` blocks; the n-th best
    block maximum of a row is at most its n-th best score (n blocks hold a score at least
    that high), so the scores at or above it are a superset of the top n, a little longer
    than n. Only they are sorted; ties go to the lower item code. ``scores`` is top_n's
    own float32 array (NaN scores are set to -inf in it)."""
    r, m = scores.shape
    width = -(-m // (SELECT_BLOCKS * n))
    full = (m // width) * width

    def block_maxima() -> np.ndarray:
        head = scores[:, :full].reshape(r, m // width, width).max(axis=2)
        if full == m:
            return head
        return np.concatenate([head, scores[:, full:].max(axis=1, keepdims=True)], axis=1)

    maxima = block_maxima()
    if np.isnan(maxima).any():  # a NaN score is never listed
        scores[np.isnan(scores)] = -np.inf
        maxima = block_maxima()
    b = maxima.shape[1]
    floor = np.partition(maxima, b - n, axis=1)[:, b - n]
    # a row with fewer than n finite scores: its floor is -inf, which is never listed
    floor = np.maximum(floor, np.finfo(np.float32).min)
    rows, cols = np.nonzero(scores >= floor[:, None])
    return _top_entries(rows, cols, scores[rows, cols], r, m, n)


def _entries(
    matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """(the matrix with sorted indices, position of each (row, col) among its entries,
    whether it is an entry); ``cols`` of -1 are never entries."""
    m = matrix.tocsr()
    m.sort_indices()
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    if not m.nnz or not rows.size:
        return m, np.zeros(rows.shape, dtype=np.int64), np.zeros(rows.shape, dtype=bool)
    keys = (
        np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr)) * m.shape[1] + m.indices
    )
    want = rows * m.shape[1] + np.maximum(cols, 0)
    at = np.clip(np.searchsorted(keys, want), 0, len(keys) - 1)
    return m, at, (keys[at] == want) & (cols >= 0)


def has_entry(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Whether each (row, col) is a stored entry of ``matrix`` (any shape of arrays)."""
    return _entries(matrix, rows, cols)[2]


def lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, missing: float) -> np.ndarray:
    """``matrix[rows, cols]`` for a CSR matrix, ``missing`` where the entry is absent
    (float32)."""
    m, at, hit = _entries(matrix, rows, cols)
    out = np.full(hit.shape, missing, dtype=np.float32)
    out[hit] = m.data[at[hit]]
    return out


def sparse_top(
    scores: sp.csr_matrix, n: int, banned: sp.csr_matrix | None, allowed: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`top_n` over the entries of a sparse score matrix (absent entries are never
    listed): the ``n`` best per row, skipping ``banned`` entries and items not ``allowed``;
    -1/NaN pads."""
    m = sp.csr_matrix(scores, dtype=np.float32)
    m.sum_duplicates()
    rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
    cols, vals = m.indices.astype(np.int64), m.data
    ok = np.isfinite(vals)
    if allowed is not None:
        ok &= allowed[cols]
    if banned is not None and banned.nnz:
        ok &= ~has_entry(banned, rows, cols)
    return _top_entries(rows[ok], cols[ok], vals[ok], m.shape[0], m.shape[1], n)


def approximate_top(
    index: ItemIndex,
    queries: np.ndarray,
    item_vectors: np.ndarray,
    n: int,
    banned: sp.csr_matrix | None,
    allowed: np.ndarray | None,
    *,
    pool: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best items per query (codes, exact dot-product scores), from the index's
    top ``pool`` (at least ``n`` plus the most banned items of any row, so a shopper's
    seen items cannot crowd the list out), skipping ``banned`` entries and items not
    ``allowed``; rows with fewer eligible items pad with -1/NaN."""
    extra = 0 if banned is None else int(np.diff(banned.indptr).max(initial=0))
    found = index.search(queries, max(pool, n + extra))
    ok = found >= 0
    if allowed is not None:
        ok &= allowed[np.maximum(found, 0)]
    if banned is not None and banned.nnz:
        users = np.broadcast_to(np.arange(len(found))[:, None], found.shape)
        ok &= ~has_entry(banned, users, found)
    scores = np.where(
        ok,
        np.einsum("rkd,rd->rk", item_vectors[np.maximum(found, 0)], queries).astype(np.float32),
        -np.inf,
    )
    order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    idx = np.take_along_axis(found, order, axis=1)
    best = np.take_along_axis(scores, order, axis=1)
    bad = ~np.isfinite(best)
    idx[bad], best[bad] = -1, np.nan
    return idx.astype(np.int64), best.astype(np.float32)


def shared_top(
    group: np.ndarray,
    rows: np.ndarray,
    n: int,
    banned: sp.csr_matrix | None,
    allowed: np.ndarray,
) -> np.ndarray:
    """Per user, the ``n`` best unbanned items of their group's score row: each group's
    list is ranked once, long enough to survive the most items any member has seen."""
    n_users = len(group)
    seen = np.diff(banned.indptr) if banned is not None else np.zeros(n_users, dtype=np.int64)
    extra = int(seen.max(initial=0))
    idx, _ = top_n(rows, n + extra, None, allowed)
    cand = idx[group]  # (users, n + extra), -1 padded
    if banned is not None and banned.nnz:
        users = np.broadcast_to(np.arange(n_users)[:, None], cand.shape)
        cand = np.where(has_entry(banned, users, cand), -1, cand)
    ok = cand >= 0
    keep = ok & (np.cumsum(ok, axis=1) <= n)
    # compact each row: kept items first, in order
    order = np.argsort(~keep, axis=1, kind="stable")[:, :n]
    out = np.take_along_axis(np.where(keep, cand, -1), order, axis=1)
    return out


class Generator(ABC):
    """A candidate source: fit on a :class:`Context`, score the catalog for a batch of users.

    ``recommend(user_ids, n, exclude_seen)`` is the public interface; ``scores`` and
    ``top`` work on a :class:`UserBatch` so the recommender can pass users the model has
    not seen (folded in from their rows, or answered from demographics).
    """

    name: ClassVar[str]

    def __init__(self, cfg: CandidateConfig) -> None:
        self.cfg = cfg
        self._ctx: Context | None = None
        self.fit_seconds = 0.0
        self.ann: ItemIndex | None = None  # approximate retrieval (pipelines/candidates/ann.py)

    @property
    def ctx(self) -> Context:
        if self._ctx is None:
            raise RuntimeError(f"the {self.name} generator is not fitted")
        return self._ctx

    def fit(self, ctx: Context) -> None:
        """Learn from ``ctx.history`` (and the side information)."""
        started = time.perf_counter()
        self._ctx = ctx
        self._fit(ctx)
        self._build_index()
        self.fit_seconds = time.perf_counter() - started

    # --- dot-product sources: approximate retrieval on large catalogs
    def query_vectors(self, batch: UserBatch) -> np.ndarray | None:
        """For a source that scores ``query · item``: the batch's query vectors (None:
        not such a source)."""
        del batch
        return None

    def item_vectors(self) -> np.ndarray | None:
        """The item vectors of a dot-product source (None: not such a source)."""
        return None

    def _build_index(self) -> None:
        vectors = self.item_vectors()
        min_items = self.cfg.ann_min_items
        self.ann = None
        if vectors is None or min_items == 0 or len(vectors) < min_items:
            return
        self.ann = ItemIndex.build(
            vectors, self.ctx.history.item_exists, method=self.cfg.ann_method,
            neighbours=self.cfg.ann_neighbours,
            ef_construction=self.cfg.ann_ef_construction, ef_search=self.cfg.ann_ef_search,
        )  # fmt: skip

    def approximate(
        self, batch: UserBatch, n: int, banned: sp.csr_matrix | None, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best items per user from the index (needs ``self.ann``)."""
        assert self.ann is not None
        queries = self.query_vectors(batch)
        vectors = self.item_vectors()
        assert queries is not None and vectors is not None
        return approximate_top(
            self.ann, queries, vectors, n, banned, allowed, pool=self.cfg.ann_pool
        )

    # --- sparse sources: only the items they relate to a shopper carry a score
    missing_score: ClassVar[float] = 0.0  # the dense score of an item a sparse row lacks

    def sparse_scores(self, batch: UserBatch) -> sp.csr_matrix | None:
        """For a source whose scores are a sparse product (item-kNN, buy-again,
        co-occurrence): the batch's scores as a sparse matrix, equal to ``scores`` on its
        entries and ``missing_score`` elsewhere (None: a dense source). Listing and scoring
        from it never builds a users x catalog array."""
        del batch
        return None

    def batch_sparse(self, batch: UserBatch) -> sp.csr_matrix | None:
        """:meth:`sparse_scores`, computed once per batch (listing and scoring share it;
        callers must not modify it)."""
        return batch.remember(("sparse", id(self)), lambda: self.sparse_scores(batch))

    def pair_scores(self, batch: UserBatch, pos: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The scores of (batch position, item) pairs: a dot product for dot-product
        sources, a lookup for sparse ones, else read from the dense ``scores``."""
        queries, vectors = self.query_vectors(batch), self.item_vectors()
        if queries is not None and vectors is not None:
            return np.einsum("rd,rd->r", queries[pos], vectors[items]).astype(np.float32)
        sparse = self.batch_sparse(batch)
        if sparse is not None:
            return lookup(sparse, pos, items, self.missing_score)
        return np.asarray(self.scores(batch)[pos, items], dtype=np.float32)

    @abstractmethod
    def _fit(self, ctx: Context) -> None: ...

    @abstractmethod
    def scores(self, batch: UserBatch) -> np.ndarray:
        """Scores over the whole catalog, shape (len(batch), n_items); higher is better."""

    def answers(self, batch: UserBatch) -> np.ndarray:
        """Which users this source can say something about: by default those with
        interactions (known to the model or folded in from their rows)."""
        return np.diff(batch.rows.indptr) > 0

    def shared(self, batch: UserBatch) -> tuple[np.ndarray, np.ndarray] | None:
        """For sources whose scores depend on a user's group only: (group per user, one
        score row per group), so the catalog is ranked once per group, not per user."""
        del batch
        return None

    def top(
        self, batch: UserBatch, n: int, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` best existing items per user (item codes, scores)."""
        history = self.ctx.history
        skip = banned(batch.rows, history.repeat_allowed) if exclude_seen else None
        sparse = None if self.ann is not None else self.batch_sparse(batch)
        if self.ann is not None:
            idx, best = self.approximate(batch, n, skip, history.item_exists)
        elif sparse is not None:
            idx, best = sparse_top(sparse, n, skip, history.item_exists)
        else:
            idx, best = top_n(self.scores(batch), n, skip, history.item_exists)
        silent = ~self.answers(batch)
        idx[silent], best[silent] = -1, np.nan
        return idx, best

    def recommend(
        self, user_ids: Sequence[str], n: int, exclude_seen: bool = True
    ) -> list[list[tuple[str, float]]]:
        """Top ``n`` ``(item_id, score)`` per user; unknown users get whatever this source
        can say without history (popularity answers them, the others return nothing)."""
        batch = self.ctx.batch(user_ids)
        idx, best = self.top(batch, n, exclude_seen)
        return as_lists(self.ctx.item_ids, idx, best)

    # --- persistence: learned arrays only (the context is saved once by the recommender)
    def state(self) -> dict[str, Any]:
        return {}

    def set_state(self, arrays: dict[str, Any]) -> None:
        del arrays

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"name": self.name, "config": asdict(self.cfg), "fit_seconds": self.fit_seconds}
        write_json(folder / f"{self.name}.json", meta)
        state = self.state()
        if self.ann is not None:
            state = {**state, "ann_index": self.ann.to_bytes(), "ann_items": self.ann.items}
        np.savez(
            folder / f"{self.name}.npz", **{k: v for k, v in state.items() if not sp.issparse(v)}
        )
        for key, matrix in state.items():
            if sp.issparse(matrix):
                sp.save_npz(folder / f"{self.name}.{key}.npz", matrix.tocsr())

    @classmethod
    def load(cls, folder: Path, ctx: Context) -> Generator:
        meta = json.loads((folder / f"{cls.name}.json").read_text())
        gen = cls(CandidateConfig(**meta["config"]))
        gen.fit_seconds = float(meta.get("fit_seconds", 0.0))
        with np.load(folder / f"{cls.name}.npz", allow_pickle=False) as data:
            arrays: dict[str, Any] = {k: data[k] for k in data.files}
        for path in folder.glob(f"{cls.name}.*.npz"):
            arrays[path.name.split(".")[1]] = sp.load_npz(path).tocsr()
        gen._ctx = ctx
        gen.set_state(arrays)
        if "ann_index" in arrays:
            gen.ann = ItemIndex.from_bytes(
                arrays["ann_index"], arrays["ann_items"], gen.cfg.ann_ef_search
            )
        return gen


@dataclass
class SideInfo:
    """Catalog and user attributes the content and popularity generators use.

    ``content`` holds one unit vector per item, the text and image embeddings each
    normalised and scaled by 1/sqrt(2) and put side by side, so the dot product of two
    items is the mean of their text cosine and image cosine (text only when there is no
    image); a zero row means no content is known yet.
    """

    content: np.ndarray | None
    age: np.ndarray
    gender: np.ndarray
    region: np.ndarray
    segment: np.ndarray  # per user at the history's time, -1 unknown

    @staticmethod
    def content_vectors(text: np.ndarray, image: np.ndarray | None) -> np.ndarray:
        """Combine text and (optional) image embeddings as described above."""

        def unit(m: np.ndarray) -> np.ndarray:
            norms = np.linalg.norm(m, axis=1, keepdims=True)
            return np.where(norms > 0, m / np.maximum(norms, 1e-12), 0.0)

        t = unit(np.asarray(text, dtype=np.float32))
        if image is None or image.shape[1] == 0:
            return t.astype(np.float32)
        i = unit(np.asarray(image, dtype=np.float32))
        has_image = np.linalg.norm(i, axis=1) > 0
        both = np.hstack([t, i]) / np.sqrt(2.0)
        only_text = np.hstack([t, np.zeros_like(i)])
        return np.where(has_image[:, None], both, only_text).astype(np.float32)


@dataclass
class Context:
    """What generators are fitted on and answer from: the history, the side information
    and the ids behind the user and item codes."""

    history: History
    side: SideInfo
    user_ids: np.ndarray
    item_ids: np.ndarray

    def batch(
        self,
        user_ids: Sequence[str] | np.ndarray,
        *,
        recent_items: Sequence[Sequence[str]] | None = None,
        age: np.ndarray | None = None,
        gender: np.ndarray | None = None,
        region: np.ndarray | None = None,
    ) -> UserBatch:
        """A batch of users by id. Known users get their history rows and stored
        demographics; for unknown users, ``recent_items`` (item ids they touched) become
        their rows (folding-in) and ``age``/``gender``/``region`` their demographics."""
        codes = index_of(user_ids, self.user_ids)
        n = len(codes)
        known = codes >= 0
        safe = np.where(known, codes, 0)
        rows_csr = sp.csr_matrix((n, len(self.item_ids)), dtype=np.float32)
        if n:
            rows_csr = rows_where(self.history.matrix[safe], known)
        in_history = np.diff(rows_csr.indptr) > 0
        if recent_items is not None:  # users without history rows are folded in
            extra = _rows_from_items(recent_items, self.item_ids, in_history)
            rows_csr = (rows_csr + extra).tocsr()
        rows_csr.eliminate_zeros()
        side = self.side

        def pick(
            stored: np.ndarray, dtype: Any, given: np.ndarray | None, missing: Any
        ) -> np.ndarray:
            # the batch's rows first, then the type: never a copy of the whole column
            mine = stored[safe].astype(dtype, copy=False)
            out = np.where(known, mine, missing) if n else np.array([], dtype=mine.dtype)
            if given is not None:
                given = np.asarray(given, dtype=out.dtype)
                out = np.where(known, out, given)
            return out

        return UserBatch(
            codes=codes,
            rows=rows_csr,
            age=pick(side.age, float, None if age is None else np.asarray(age, float), np.nan),
            gender=pick(side.gender, object, gender, None),
            region=pick(side.region, object, region, None),
            segment=pick(side.segment, np.int64, None, -1),
            in_history=in_history,
        )


def _rows_from_items(
    recent_items: Sequence[Sequence[str] | None], item_ids: np.ndarray, has_rows: np.ndarray
) -> sp.csr_matrix:
    """Rows with weight 1 on each listed item, for users without history rows (the
    others keep their history and stay empty here)."""
    rows, cols = [], []
    for r, (items, taken) in enumerate(zip(recent_items, has_rows, strict=True)):
        if taken or items is None:
            continue
        idx = index_of(list(items), item_ids)
        idx = np.unique(idx[idx >= 0])
        rows.extend([r] * len(idx))
        cols.extend(idx.tolist())
    return sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(has_rows), len(item_ids))
    )


def item_rows(
    items_per_user: Sequence[Sequence[str] | None], item_ids: np.ndarray
) -> sp.csr_matrix:
    """One row per user with weight 1 on each listed item id (unknown ids are ignored)."""
    return _rows_from_items(items_per_user, item_ids, np.zeros(len(items_per_user), dtype=bool))


AGE_BANDS = (0.0, 18.0, 25.0, 35.0, 45.0, 55.0, 65.0)


def age_band(age: np.ndarray) -> np.ndarray:
    """Age band code (0-6), 7 when unknown."""
    a = np.asarray(age, dtype=float)
    band = np.searchsorted(AGE_BANDS, np.nan_to_num(a, nan=0.0), side="right") - 1
    return np.where(np.isnan(a), len(AGE_BANDS), np.clip(band, 0, len(AGE_BANDS) - 1))


def as_lists(
    item_ids: np.ndarray, idx: np.ndarray, scores: np.ndarray
) -> list[list[tuple[str, float]]]:
    """Arrays of top items into the public ``[(item_id, score), ...]`` per user."""
    out: list[list[tuple[str, float]]] = []
    for row_idx, row_scores in zip(idx, scores, strict=True):
        keep = row_idx >= 0
        out.append(
            [
                (str(i), float(s))
                for i, s in zip(item_ids[row_idx[keep]], row_scores[keep], strict=True)
            ]
        )
    return out


# pd.Index of the id arrays asked about, by the array's identity: its hash table is built
# once, not per call (serving asks about the same ids every request). Entries hold the
# array weakly and leave when it is freed; id arrays are never modified in place.
_INDEXES: dict[int, tuple[weakref.ref[np.ndarray], pd.Index]] = {}


def _index(universe: np.ndarray) -> pd.Index:
    key = id(universe)
    hit = _INDEXES.get(key)
    if hit is not None and hit[0]() is universe:
        return hit[1]
    lookup = pd.Index(universe)
    cache = _INDEXES  # bound here: at interpreter exit the module's globals are gone
    _INDEXES[key] = (weakref.ref(universe, lambda _: cache.pop(key, None)), lookup)
    return lookup


def blank_rows(m: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``m`` with the given rows emptied (their stored values removed; the shape kept)."""
    out = m.tocsr(copy=True)
    for r in rows:
        out.data[out.indptr[r] : out.indptr[r + 1]] = 0
    out.eliminate_zeros()
    return out


def index_of(ids: Sequence[str] | np.ndarray, universe: np.ndarray) -> np.ndarray:
    """Positions of ``ids`` in ``universe`` (-1 where absent)."""
    lookup = _index(universe) if type(universe) is np.ndarray else pd.Index(universe)
    return np.asarray(lookup.get_indexer(pd.Index(np.asarray(ids, dtype=object))), dtype=np.int64)
