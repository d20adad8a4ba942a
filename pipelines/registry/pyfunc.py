"""The pyfunc face of a recommender bundle, for callers that want MLflow's interface
(``mlflow.pyfunc.load_model("models:/shopml-recommender@champion")``)."""

from __future__ import annotations

from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import predict_frame

# Packages the pyfunc model needs where it is loaded (ShopML itself included).
_REQUIREMENTS = ("mlflow", "lightgbm", "implicit", "pandas", "numpy", "scipy", "pyarrow", "shopml")


class RecommenderModel(PythonModel):
    """The pyfunc face of a bundle.

    ``predict`` takes a DataFrame with ``user_id`` (and optionally ``age``, ``gender``,
    ``region`` for users the model does not know, and ``recent_items``, a list of item ids,
    to fold a new user in) and returns user_id, rank, item_id, score, reasons. Params:
    ``k`` (default 10), ``explain`` (default True).
    """

    def load_context(self, context: Any) -> None:
        self.recommender = Recommender.load(Path(context.artifacts["bundle"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        del context
        params = params or {}
        return predict_frame(
            self.recommender,
            model_input,
            k=int(params.get("k", 10)),
            explain=bool(params.get("explain", True)),
        )


def requirements() -> list[str]:
    out = []
    for package in _REQUIREMENTS:
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return out
