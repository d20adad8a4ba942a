"""The interaction history a candidate source learns from: a users x items matrix of
time-decayed confidences, as of one time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from pipelines.candidates.config import CandidateConfig
from pipelines.candidates.repeats import Repeats, repeat_stats
from pipelines.candidates.sessions import keep_latest, session_cooccurrence
from pipelines.data.timeline import DAY, Timeline


@dataclass
class History:
    """The events a model may learn from, as of ``now``.

    ``matrix[u, i]`` is the confidence that user ``u`` likes item ``i``: the sum over
    their events of the event-type weight times ``0.5 ** (age / half_life)``.
    ``last_seen[u, i]`` (same sparsity) is the time of the latest such event.
    """

    matrix: sp.csr_matrix
    last_seen: sp.csr_matrix
    now: float
    item_exists: np.ndarray  # bool per item: created before ``now``
    trending: np.ndarray  # per item: weighted events in the trending window
    popularity: np.ndarray  # per item: distinct users with an event
    user_events: np.ndarray  # per user: number of events
    user_last: np.ndarray  # per user: time of the latest event (NaN: none)
    user_mean_ts: np.ndarray  # per user: mean time of their events (NaN: none)
    item_mean_ts: np.ndarray  # per item: mean time of its events (NaN: none)
    repeats: Repeats | None = None  # purchase statistics and the repeat policy
    cooccurrence: sp.csr_matrix | None = None  # item x item basket/session relation

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.matrix.shape[0]), int(self.matrix.shape[1]))

    @classmethod
    def from_timeline(
        cls, tl: Timeline, selected: np.ndarray | slice, now: float, cfg: CandidateConfig
    ) -> History:
        """The history made of the events ``selected`` (a mask or slice over the
        time-sorted events) as of ``now``; every selected event must be before ``now``."""
        user, item, etype, ts = (a[selected] for a in (tl.user, tl.item, tl.etype, tl.ts))
        if len(ts) and ts.max() >= now:
            raise ValueError("a history may only hold events before its time")
        decay = np.power(0.5, (now - ts) / (cfg.half_life_days * DAY)).astype(np.float32)
        weight = cfg.weight_of_type()[etype] * decay
        shape = (tl.n_users, tl.n_items)
        matrix = sp.csr_matrix((weight, (user, item)), shape=shape, dtype=np.float32)
        matrix.sum_duplicates()
        # The latest event time per (user, item): events are time-sorted, so keep the last.
        key = user.astype(np.int64) * tl.n_items + item
        last_idx = len(key) - 1 - np.unique(key[::-1], return_index=True)[1]
        last_seen = sp.csr_matrix(
            (ts[last_idx] - now + 1.0, (user[last_idx], item[last_idx])), shape=shape
        )  # stored as (time - now + 1) <= 1 s, never 0, so the sparsity equals ``matrix``
        last_seen.sort_indices()
        matrix.sort_indices()
        recent = ts >= now - cfg.trending_days * DAY
        trending = np.bincount(item[recent], weights=weight[recent], minlength=tl.n_items)
        popularity = np.diff(matrix.tocsc().indptr).astype(np.float32)
        user_events = np.bincount(user, minlength=tl.n_users)
        user_last = np.full(tl.n_users, np.nan)
        if len(ts):
            last_event = len(user) - 1 - np.unique(user[::-1], return_index=True)[1]
            user_last[user[last_event]] = ts[last_event]

        def mean_time(codes: np.ndarray, n: int) -> np.ndarray:
            count = np.bincount(codes, minlength=n)
            total = np.bincount(codes, weights=ts - now, minlength=n)
            return np.where(count > 0, now + total / np.maximum(count, 1), np.nan)

        return cls(
            matrix=matrix,
            last_seen=last_seen,
            now=now,
            item_exists=tl.items["created_s"].to_numpy() < now,
            trending=trending.astype(np.float32),
            popularity=popularity,
            user_events=user_events,
            user_last=user_last,
            user_mean_ts=mean_time(user, tl.n_users),
            item_mean_ts=mean_time(item, tl.n_items),
            repeats=repeat_stats(tl, selected, now, cfg),
            cooccurrence=session_cooccurrence(tl, selected, cfg)
            if cfg.per_source.get("cooccur", 0) > 0
            else None,
        )

    @property
    def repeat_allowed(self) -> np.ndarray | None:
        """Bool per item: may be shown again to a shopper who touched it (None: never)."""
        return None if self.repeats is None else self.repeats.allowed

    def recent_rows(self, users: np.ndarray, keep: int) -> sp.csr_matrix:
        """The rows of ``users`` keeping each user's ``keep`` most recently touched items."""
        rows = self.matrix[users]
        times = self.last_seen[users]
        return keep_latest(rows, times, keep)
