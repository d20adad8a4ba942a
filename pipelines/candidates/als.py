"""ALS matrix factorisation (implicit's AlternatingLeastSquares): R_ui ~ Q_u . I_i.

Confidence ``1 + alpha * w_ui`` where ``w_ui`` is the history's time-decayed, event-type
weighted count (Hu, Koren & Volinsky 2008). implicit 0.7 takes the matrix values as the
confidence itself, so the generator passes ``1 + alpha * w`` with implicit's alpha at 1. A user the model has not seen is folded in
from their rows with implicit's ``recalculate_user`` (one least-squares solve against the
fixed item factors), without retraining.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from pipelines.candidates.base import Context, Generator, UserBatch


class ALSGenerator(Generator):
    name = "als"

    def _model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        with warnings.catch_warnings():  # its BLAS check runs before our thread limit applies
            warnings.filterwarnings("ignore", message="OpenBLAS is configured")
            return self._construct(AlternatingLeastSquares)

    def _construct(self, cls: Any) -> Any:
        return cls(
            factors=self.cfg.als_factors,
            regularization=self.cfg.als_regularization,
            alpha=1.0,  # the confidence is computed here (see the module docstring)
            iterations=self.cfg.als_iterations,
            random_state=self.cfg.seed,
            num_threads=self.cfg.threads,
        )

    def confidence(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        out = rows.astype(np.float32, copy=True).tocsr()
        out.data = 1.0 + self.cfg.als_alpha * out.data
        return out

    def _fit(self, ctx: Context) -> None:
        self.model = self._model()
        with threadpool_limits(1, "blas"), warnings.catch_warnings():
            # implicit runs its own threads; it warns about BLAS threads before the limit applies
            warnings.filterwarnings("ignore", message="OpenBLAS is configured")
            self.model.fit(self.confidence(ctx.history.matrix), show_progress=False)

    def user_vectors(self, batch: UserBatch) -> np.ndarray:
        """Stored factors for known users; folded-in factors for users with rows only."""
        out = np.zeros((len(batch), self.model.factors), dtype=np.float32)
        known = batch.known
        out[known] = self.model.user_factors[batch.codes[known]]
        fold = ~known & (np.diff(batch.rows.indptr) > 0)
        if fold.any():  # (the caller limits BLAS threads: this may run in a worker thread)
            out[fold] = self.model.recalculate_user(
                np.arange(int(fold.sum())), self.confidence(batch.rows[np.flatnonzero(fold)])
            )
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
