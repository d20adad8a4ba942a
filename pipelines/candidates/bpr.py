"""BPR matrix factorisation (implicit's BayesianPersonalizedRanking).

Learns from which items a user touched (any positive confidence) versus sampled others
(Rendle et al. 2009). The item factors carry a bias column and user factors a constant 1.
implicit cannot fold a new user into BPR, so a user the model has not seen gets the
ridge-regression solution ``q = (V_H^T V_H + lambda I)^-1 V_H^T 1`` over the factors of the
items in their rows (the standard fold-in for factor models), with the constant 1 appended.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from pipelines.candidates.base import Context, Generator, UserBatch

FOLD_IN_RIDGE = 0.1


class BPRGenerator(Generator):
    name = "bpr"

    def _model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.cfg.bpr_factors,
            learning_rate=self.cfg.bpr_learning_rate,
            regularization=self.cfg.bpr_regularization,
            iterations=self.cfg.bpr_iterations,
            random_state=self.cfg.seed,
            num_threads=self.cfg.threads,
        )

    def _fit(self, ctx: Context) -> None:
        self.model = self._model()
        with threadpool_limits(1, "blas"):
            self.model.fit(ctx.history.matrix, show_progress=False)

    def user_vectors(self, batch: UserBatch) -> np.ndarray:
        item_f = self.model.item_factors
        out = np.zeros((len(batch), item_f.shape[1]), dtype=np.float32)
        known = batch.known
        out[known] = self.model.user_factors[batch.codes[known]]
        for b in np.flatnonzero(~known & (np.diff(batch.rows.indptr) > 0)):
            items = batch.rows.indices[batch.rows.indptr[b] : batch.rows.indptr[b + 1]]
            v = item_f[items, :-1].astype(np.float64)
            gram = v.T @ v + FOLD_IN_RIDGE * np.eye(v.shape[1])
            rhs = v.T @ (1.0 - item_f[items, -1])  # the bias is not the user's to explain
            out[b, :-1] = np.linalg.solve(gram, rhs)
            out[b, -1] = 1.0
        return out

    def scores(self, batch: UserBatch) -> np.ndarray:
        return self.user_vectors(batch) @ self.model.item_factors.T

    def pair_scores(self, batch: UserBatch, items: np.ndarray) -> np.ndarray:
        users = self.user_vectors(batch)
        out = np.einsum("bf,bjf->bj", users, self.model.item_factors[np.maximum(items, 0)])
        out[items < 0] = np.nan
        return out.astype(np.float32)

    def state(self) -> dict[str, Any]:
        return {"user_factors": self.model.user_factors, "item_factors": self.model.item_factors}

    def set_state(self, arrays: dict[str, Any]) -> None:
        self.model = self._model()
        self.model.user_factors = arrays["user_factors"]
        self.model.item_factors = arrays["item_factors"]
