"""Search models in the MLflow registry: ``shopml-search``, beside the recommender.

A trained search model folder (:class:`~pipelines.search.model.SearchModel`) is logged
as one pyfunc model in the experiment ``shopml-search`` and registered as the next
version of ``shopml-search`` with the alias ``challenger``; ``champion`` is only ever
moved by promotion, exactly as for ``shopml-recommender``.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

from pipelines.registry.models import (
    CHALLENGER,
    Registered,
    bundle_path,
    registered_name,
    tag_version,
)
from pipelines.registry.pyfunc import requirements
from pipelines.registry.tracking import configure, flatten, mlflow_module, quiet_mlflow, run_tags
from pipelines.search.model import SearchModel, answer_frame
from pipelines.settings import Settings

SEARCH_MODEL = "shopml-search"
SEARCH_EXPERIMENT = "shopml-search"
SEARCH_ARTIFACT = "search"


class SearchPyfunc(PythonModel):
    """The pyfunc face of a search model: ``predict`` takes a DataFrame with ``query``
    (and optionally ``user_id``) and returns query, user_id, rank, item_id, score,
    fallback. Params: ``k`` (default 10)."""

    def load_context(self, context: Any) -> None:
        self.model = SearchModel.load(Path(context.artifacts["bundle"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        del context
        return answer_frame(self.model, model_input, k=int((params or {}).get("k", 10)))


@dataclass(frozen=True)
class SearchOutcome:
    registered: Registered
    snapshot_id: str

    @property
    def version(self) -> int:
        return self.registered.version

    @property
    def uri(self) -> str:
        return self.registered.uri


def register_search(
    model: SearchModel, *, settings: Settings, run_name: str | None = None
) -> SearchOutcome:
    """Log ``model`` in a new run of the ``shopml-search`` experiment, register it as the
    next version of ``shopml-search`` and alias it ``challenger``."""
    mlflow = mlflow_module()
    from mlflow.models import infer_signature

    configure(settings, SEARCH_EXPERIMENT)
    info = model.info
    snapshot_id = str(info.get("snapshot_id", ""))
    config = dict(info.get("config") or {})
    tags = {**run_tags(snapshot_id, config), "shopml.model": SEARCH_MODEL}
    name = run_name or f"search {snapshot_id[:12]} until {str(info.get('train_until'))[:10]}"
    sample = _sample_queries(model)
    example = pd.DataFrame({"query": sample})
    output = answer_frame(model, example, k=10)
    with quiet_mlflow():
        signature = infer_signature(example, output, params={"k": 10})
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten("", config).items()})
        mlflow.log_params(
            {
                "snapshot_path": str(info.get("snapshot", "")),
                "train_until": str(info.get("train_until")),
                "trained.labels": str(info.get("labels", ""))[:500],
                "trained.embedding": str(info.get("embedding", "")),
            }
        )
        metrics = {
            k: float(info[k])
            for k in (
                "first_stage_ndcg_at_10",
                "ranker_validation_ndcg",
                "ranker_rounds",
                "seconds",
            )
            if isinstance(info.get(k), int | float)
        }
        mlflow.log_metrics(metrics)
        target = registered_name(SEARCH_MODEL, settings)
        with tempfile.TemporaryDirectory(prefix="shopml-search-") as tmp:
            folder = model.save(Path(tmp) / "bundle")
            with quiet_mlflow():
                logged = mlflow.pyfunc.log_model(
                    name=SEARCH_ARTIFACT,
                    python_model=SearchPyfunc(),
                    artifacts={"bundle": str(folder)},
                    pip_requirements=requirements(),
                    signature=signature,
                    registered_model_name=target,
                )
        version = int(logged.registered_model_version)
        client = mlflow.MlflowClient()
        client.set_registered_model_alias(target, CHALLENGER, str(version))
        tag_version(
            target,
            version,
            {
                "snapshot_id": snapshot_id,
                "train_until": str(info.get("train_until")),
                "labels": str(info.get("label_source")),
                **{f"metric.{k}": f"{v:.4f}" for k, v in metrics.items()},
            },
        )
        registered = Registered(
            name=target,
            version=version,
            uri=f"models:/{target}/{version}",
            run_id=run.info.run_id,
            experiment_id=run.info.experiment_id,
        )
    return SearchOutcome(registered, snapshot_id)


def load_search(uri: str, settings: Settings) -> SearchModel:
    """The search model behind a model URI (``models:/shopml-search/3``,
    ``models:/shopml-search@champion``) or a local model folder."""
    return SearchModel.load(search_path(uri, settings))


def search_path(uri: str, settings: Settings, dst: Path | None = None) -> Path:
    """The local folder of a search model (:func:`bundle_path`: a folder as it is, a
    registry URI downloaded into ``dst`` or a cache)."""
    return bundle_path(uri, settings, dst)


def _sample_queries(model: SearchModel, n: int = 3) -> list[str]:
    """A few queries for the signature's example: catalog titles' first words."""
    titles = model.index.items["title"].astype(str).head(n).tolist()
    return [" ".join(t.split()[:2]) or "item" for t in titles] or ["item"]
