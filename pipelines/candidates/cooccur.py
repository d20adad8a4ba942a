"""Basket and session co-occurrence: "shoppers who bought this also bought".

Two items are related when they are touched (viewed, carted, bought) in the same session
(a basket), or one in a shopper's session and the other in that shopper's next session
(next-basket transitions, weighted ``cooccur_next_weight``). The counts are normalised like
a cosine, ``c_ij / sqrt(n_i n_j)`` with ``n_i`` the sessions holding ``i``, and each item
keeps its ``cooccur_neighbours`` strongest relations. A shopper's scores are those relations
summed over their ``cooccur_history`` most recent items, each weighted by its
time-decayed confidence: it needs one session of history, or just the items of an
anonymous session (``recent_items``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from pipelines.candidates.base import Context, Generator, UserBatch


class CooccurGenerator(Generator):
    name = "cooccur"

    def _fit(self, ctx: Context) -> None:
        relation = ctx.history.cooccurrence
        n = len(ctx.item_ids)
        self.relation = (
            relation if relation is not None else sp.csr_matrix((n, n), dtype=np.float32)
        )

    def _recent(self, batch: UserBatch) -> sp.csr_matrix:
        return batch.recent(self.ctx.history, self.cfg.cooccur_history)

    def _reach(self, batch: UserBatch) -> sp.csr_matrix:
        return batch.remember(
            ("cooccur", id(self)), lambda: sp.csr_matrix(self._recent(batch) @ self.relation)
        )

    def answers(self, batch: UserBatch) -> np.ndarray:
        return np.diff(self._reach(batch).indptr) > 0

    missing_score = float("nan")  # unrelated: not on the list, never padded

    def sparse_scores(self, batch: UserBatch) -> sp.csr_matrix:
        out = self._reach(batch).astype(np.float32, copy=True)  # the shared one stays intact
        out.data[out.data <= 0] = 0
        out.eliminate_zeros()
        return out

    def scores(self, batch: UserBatch) -> np.ndarray:
        out = np.full((len(batch), len(self.ctx.item_ids)), np.nan, dtype=np.float32)
        s = self.sparse_scores(batch).tocoo()
        out[s.row, s.col] = s.data
        return out

    def state(self) -> dict[str, Any]:
        return {"relation": self.relation}

    def set_state(self, arrays: dict[str, Any]) -> None:
        self.relation = arrays["relation"]
