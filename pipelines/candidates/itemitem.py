"""Item-item collaborative filtering: EASE for small catalogs, sparse item-kNN otherwise.

EASE (Steck 2019) solves ``B = argmin ||X - XB||^2 + lambda ||B||^2`` with ``diag(B) = 0``
in closed form: ``P = (X^T X + lambda I)^-1``, ``B = -P / diag(P)`` (column-wise), diagonal
zeroed. It needs an n x n inverse, O(n^3), so it is used only up to
``ease_max_items`` items (10,000 by default: about 30 s and 1.6 GB here). Above that,
item-kNN keeps each item's ``knn_neighbours`` most cosine-similar items by co-occurrence
(implicit's ItemItemRecommender on unit-length columns). Both read the binary "touched" matrix; a user's scores
are ``x_u B`` (or ``x_u S``), so a new user's rows work without retraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from pipelines.candidates.base import Context, Generator, UserBatch


def binary(matrix: sp.csr_matrix) -> sp.csr_matrix:
    out = matrix.copy().astype(np.float32)
    out.data[:] = 1.0
    return out


def ease(x: sp.csr_matrix, lam: float) -> np.ndarray:
    """The EASE item-item weight matrix of the binary matrix ``x`` (float32)."""
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices_from(b)] = 0.0
    return b.astype(np.float32)


class ItemItemGenerator(Generator):
    name = "itemitem"

    def _fit(self, ctx: Context) -> None:
        x = binary(ctx.history.matrix)
        self.method = "ease" if x.shape[1] <= self.cfg.ease_max_items else "knn"
        if self.method == "ease":
            self.weights: np.ndarray | sp.csr_matrix = ease(x, self.cfg.ease_lambda)
        else:
            from implicit.nearest_neighbours import ItemItemRecommender

            # cosine similarity = dot products of the unit-length item columns
            norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
            unit = (x @ sp.diags(1.0 / np.maximum(norms, 1e-12))).astype(np.float64).tocsr()
            knn = ItemItemRecommender(K=self.cfg.knn_neighbours, num_threads=self.cfg.threads)
            with threadpool_limits(1, "blas"):
                knn.fit(unit, show_progress=False)
            self.weights = knn.similarity.tocsr().astype(np.float32)

    def sparse_scores(self, batch: UserBatch) -> sp.csr_matrix | None:
        if self.method != "knn":
            return None  # EASE's weights are dense
        out = sp.csr_matrix(binary(batch.rows) @ self.weights, dtype=np.float32)
        out.eliminate_zeros()
        return out

    def scores(self, batch: UserBatch) -> np.ndarray:
        product = binary(batch.rows) @ self.weights
        return np.asarray(product.toarray() if sp.issparse(product) else product, dtype=np.float32)

    def state(self) -> dict[str, Any]:
        return {"method": np.array(self.method), "weights": self.weights}

    def set_state(self, arrays: dict[str, Any]) -> None:
        self.method = str(arrays["method"])
        self.weights = arrays["weights"]
