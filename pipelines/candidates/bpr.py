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
import scipy.sparse as sp

from pipelines.candidates.factors import FactorGenerator

FOLD_IN_RIDGE = 0.1


class BPRGenerator(FactorGenerator):
    name = "bpr"

    def _model(self) -> Any:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(
            factors=self.cfg.bpr_factors,
            learning_rate=self.cfg.bpr_learning_rate,
            regularization=self.cfg.bpr_regularization,
            iterations=self.cfg.bpr_iterations,
            random_state=self.cfg.seed,
            num_threads=self.cfg.bpr_threads,
        )

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        item_f = self.model.item_factors
        out = np.zeros((rows.shape[0], item_f.shape[1]), dtype=np.float32)
        for b in range(rows.shape[0]):
            items = rows.indices[rows.indptr[b] : rows.indptr[b + 1]]
            v = item_f[items, :-1].astype(np.float64)
            gram = v.T @ v + FOLD_IN_RIDGE * np.eye(v.shape[1])
            rhs = v.T @ (1.0 - item_f[items, -1])  # the bias is not the user's to explain
            out[b, :-1] = np.linalg.solve(gram, rhs)
            out[b, -1] = 1.0
        return out
