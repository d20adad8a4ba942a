"""Known shoppers' lists, computed once per served recommender version.

With the promoted feature snapshot as the feature source (the default), a known shopper's
plain list — no category, nothing excluded, no session items, no reasons — depends only on
the version: the bundle and the snapshot are fixed until the next swap. So the version is
asked once, when it loads, for the top :data:`LIST_K` items of its most active shoppers
(up to ``serving_precomputed_shoppers``), in the same :meth:`Recommender.recommend` calls a
request makes; such a request is then a lookup. Everything else — a category, excluded
items, session items, ``explain``, ``k`` above :data:`LIST_K`, unknown or anonymous
shoppers, the online store as the feature source (profiles change between swaps) — is
computed live, as before. Gorse keeps a cache of the same kind; here it is never stale,
because it lives and dies with the version it was computed from.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from pipelines.candidates.base import index_of
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest

log = logging.getLogger("shopml.serving")
LIST_K = 50  # items kept per shopper: requests for more are computed live
CHUNK = 500  # shoppers per bundle call (one thread: the service keeps answering meanwhile)


@dataclass(frozen=True)
class KnownLists:
    """``rows[p]`` / ``scores[p]``: the ranked catalog rows and scores of the shopper at
    ``positions[user code]`` (-1: not precomputed); a row of -1 ends a short list."""

    positions: np.ndarray  # (users,) int32
    rows: np.ndarray  # (shoppers, LIST_K) int32
    scores: np.ndarray  # (shoppers, LIST_K) float64
    seconds: float

    @property
    def shoppers(self) -> int:
        return len(self.rows)

    @property
    def nbytes(self) -> int:
        return self.positions.nbytes + self.rows.nbytes + self.scores.nbytes

    def get(self, code: int, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The top ``k`` (rows, scores) of the user with code ``code``, or None."""
        if k > LIST_K or not 0 <= code < len(self.positions):
            return None
        p = int(self.positions[code])
        if p < 0:
            return None
        rows = self.rows[p, :k]
        n = int(np.searchsorted(rows < 0, True))  # rows of -1 only trail a short list
        return rows[:n], self.scores[p, :n]


def compute(rec: Recommender, limit: int) -> KnownLists | None:
    """The lists of the ``limit`` most active known shoppers (None when ``limit`` is 0)."""
    events = np.asarray(rec.ctx.history.user_events)
    known = np.flatnonzero(events > 0)
    if limit <= 0 or not len(known):
        return None
    if len(known) > limit:  # the most active first; ties by user code, so it is stable
        known = np.sort(known[np.argsort(-events[known], kind="stable")[:limit]])
    started = time.perf_counter()
    positions = np.full(len(rec.ctx.user_ids), -1, dtype=np.int32)
    positions[known] = np.arange(len(known), dtype=np.int32)
    rows = np.full((len(known), LIST_K), -1, dtype=np.int32)
    scores = np.zeros((len(known), LIST_K), dtype=np.float64)
    user_ids = rec.ctx.user_ids
    last_log = started
    for lo in range(0, len(known), CHUNK):
        codes = known[lo : lo + CHUNK]
        frame = rec.recommend(
            RecommendRequest(user_ids=[str(u) for u in user_ids[codes]], k=LIST_K),
            batch_size=CHUNK,
        )
        at = positions[index_of(frame["user_id"].to_numpy(), user_ids)]
        ranks = frame["rank"].to_numpy(dtype=np.int64) - 1
        rows[at, ranks] = index_of(frame["item_id"].to_numpy(), rec.ctx.item_ids)
        scores[at, ranks] = frame["score"].to_numpy(dtype=np.float64)
        done, now = lo + len(codes), time.perf_counter()
        if now - last_log >= 10 or done == len(known):
            last_log = now
            log.info(
                "known shoppers' lists: %s of %s (%.0f/s)",
                f"{done:,}", f"{len(known):,}", done / max(now - started, 1e-9),
            )  # fmt: skip
    return KnownLists(positions, rows, scores, time.perf_counter() - started)


def plain(request: RecommendRequest) -> bool:
    """Whether ``request`` (one shopper) asks for the plain list a :class:`KnownLists`
    holds: no category, exclusions, session items, reasons or fresher features."""
    return not (
        request.explain
        or request.category
        or (request.exclude is not None and any(request.exclude[0]))
        or (request.recent_items is not None and any(request.recent_items[0]))
        or request.store_users is not None
    )
