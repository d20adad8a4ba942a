"""ALS matrix factorisation (implicit's AlternatingLeastSquares): R_ui ~ Q_u . I_i.

Confidence ``1 + alpha * w_ui`` where ``w_ui`` is the history's time-decayed, event-type
weighted count (Hu, Koren & Volinsky 2008). implicit 0.7 takes the matrix values as the
confidence itself, so the generator passes ``1 + alpha * w`` with implicit's alpha at 1.
A user the model has not seen is folded in from their rows with implicit's
``recalculate_user`` (one least-squares solve against the fixed item factors), without
retraining.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from pipelines.candidates.base import Context
from pipelines.candidates.factors import FactorGenerator


class ALSGenerator(FactorGenerator):
    name = "als"

    def _model(self) -> Any:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
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

    def _training_matrix(self, ctx: Context) -> sp.csr_matrix:
        return self.confidence(ctx.history.matrix)

    def _fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        return np.asarray(
            self.model.recalculate_user(np.arange(rows.shape[0]), self.confidence(rows))
        )
