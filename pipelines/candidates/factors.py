"""What ALS and BPR share: implicit's factor models, user vectors with fold-in, persistence.

A subclass says how to build its implicit model, which matrix it learns from and how to
fold in users the model has not seen; scoring is the dot product of user and item factors.
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from pipelines.candidates.base import Context, Generator, UserBatch


@contextmanager
def quiet_blas_check() -> Iterator[None]:
    """implicit warns about BLAS threads when it checks them, before a caller's
    ``threadpool_limits`` applies; ShopML always limits them around implicit's work."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="OpenBLAS is configured")
        yield


class FactorGenerator(Generator):
    @abstractmethod
    def _model(self) -> Any:
        """A fresh, unfitted implicit model."""

    def _training_matrix(self, ctx: Context) -> sp.csr_matrix:
        return ctx.history.matrix

    @abstractmethod
    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """User vectors for users known only by their ``rows`` (one per row)."""

    def _fit(self, ctx: Context) -> None:
        with quiet_blas_check():
            self.model = self._model()
        with threadpool_limits(1, "blas"), quiet_blas_check():  # implicit runs its own threads
            self.model.fit(self._training_matrix(ctx), show_progress=False)

    def user_vectors(self, batch: UserBatch) -> np.ndarray:
        """Stored factors for users in the history; folded-in factors for users with rows
        only; zeros for the rest. (The caller limits BLAS threads: this may run in a
        worker thread.)"""
        out = np.zeros((len(batch), self.model.item_factors.shape[1]), dtype=np.float32)
        known = batch.known
        out[known] = self.model.user_factors[batch.codes[known]]
        fold = ~known & (np.diff(batch.rows.indptr) > 0)
        if fold.any():
            out[fold] = self._fold_in(batch.rows[np.flatnonzero(fold)])
        return out

    def scores(self, batch: UserBatch) -> np.ndarray:
        return self.user_vectors(batch) @ self.model.item_factors.T

    def query_vectors(self, batch: UserBatch) -> np.ndarray:
        return self.user_vectors(batch)

    def item_vectors(self) -> np.ndarray:
        return np.asarray(self.model.item_factors, dtype=np.float32)

    def state(self) -> dict[str, Any]:
        return {"user_factors": self.model.user_factors, "item_factors": self.model.item_factors}

    def set_state(self, arrays: dict[str, Any]) -> None:
        with quiet_blas_check():
            self.model = self._model()
        self.model.user_factors = arrays["user_factors"]
        self.model.item_factors = arrays["item_factors"]
