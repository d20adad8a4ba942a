"""The MLflow model registry of trained recommenders.

The whole bundle is one pyfunc model registered as ``shopml-recommender``; each new
version gets the alias ``challenger`` (``champion`` is only ever moved by promotion) and
tags with its metrics and, once evaluated, its verdict.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pipelines.errors import ShopMLError
from pipelines.io import sha256_file
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import predict_frame
from pipelines.registry.pyfunc import RecommenderModel, requirements
from pipelines.registry.tracking import configure, mlflow_module, quiet_mlflow
from pipelines.settings import Settings

log = logging.getLogger(__name__)
MODEL_NAME = "shopml-recommender"
CHALLENGER = "challenger"
CHAMPION = "champion"  # moved only by promotion
MODEL_ARTIFACT = "recommender"
CANDIDATES = "-candidates"  # the suffix of the model challengers go to (registry_candidates)


def registered_name(name: str, settings: Settings) -> str:
    """The registered model that challengers of the served model ``name`` are versions of:
    ``<name>-candidates`` with the setting ``registry_candidates``, else ``name`` itself."""
    return f"{name}{CANDIDATES}" if settings.registry_candidates else name


def served_name(name: str) -> str:
    """The served model a registered model's versions are challengers of."""
    return name.removesuffix(CANDIDATES)


@dataclass(frozen=True)
class Registered:
    name: str
    version: int
    uri: str
    run_id: str
    experiment_id: str


def log_bundle(
    rec: Recommender, example_users: list[str], *, register_as: str = MODEL_NAME
) -> Registered:
    """Log ``rec`` as one pyfunc model in the active run, register it, alias it challenger."""
    mlflow = mlflow_module()
    from mlflow.models import infer_signature

    example = pd.DataFrame({"user_id": example_users})
    output = predict_frame(rec, example, k=10, explain=True)
    with quiet_mlflow():  # integer columns: MLflow's hint about missing values
        signature = infer_signature(example, output, params={"k": 10, "explain": True})
    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_bundle needs an active MLflow run")
    with tempfile.TemporaryDirectory(prefix="shopml-bundle-") as tmp:
        bundle = Path(tmp) / "bundle"
        rec.save(bundle)
        with quiet_mlflow():
            info = mlflow.pyfunc.log_model(
                name=MODEL_ARTIFACT,
                python_model=RecommenderModel(),
                artifacts={"bundle": str(bundle)},
                pip_requirements=requirements(),
                signature=signature,
                registered_model_name=register_as,
            )
    version = int(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(register_as, CHALLENGER, str(version))
    return Registered(
        name=register_as,
        version=version,
        uri=f"models:/{register_as}/{version}",
        run_id=run.info.run_id,
        experiment_id=run.info.experiment_id,
    )


def tag_version(name: str, version: int, tags: dict[str, Any]) -> None:
    client = mlflow_module().MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def bundle_path(uri: str, settings: Settings, dst: Path | None = None) -> Path:
    """The local folder of the bundle behind a model URI (``models:/NAME@ALIAS``,
    ``models:/NAME/VERSION``, ``runs:/...``; downloaded into ``dst`` or a cache) or a
    local bundle or MLflow model folder."""
    local = Path(uri)
    if local.is_dir():
        return local / "artifacts" / "bundle" if (local / "MLmodel").is_file() else local
    mlflow = mlflow_module()
    configure(settings)
    try:
        with quiet_mlflow():
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=uri, dst_path=None if dst is None else str(dst)
            )
    except Exception as exc:  # MlflowException, missing version, bad alias, ...
        raise ShopMLError(f"cannot load model {uri!r}: {str(exc).splitlines()[0]}") from exc
    return Path(path) / "artifacts" / "bundle"


def load_recommender(uri: str, settings: Settings) -> Recommender:
    """The bundle behind a model URI or a local folder (:func:`bundle_path`)."""
    return Recommender.load(bundle_path(uri, settings))


def load_pyfunc(uri: str) -> Any:
    """The registered pyfunc (for callers that want MLflow's interface)."""
    with quiet_mlflow():
        return mlflow_module().pyfunc.load_model(uri, suppress_warnings=True)


@dataclass(frozen=True)
class ModelRef:
    """A model URI resolved: the registered name and version when it is one."""

    uri: str
    name: str | None
    version: int | None


def resolve(uri: str, settings: Settings) -> ModelRef:
    """``models:/NAME/VERSION`` and ``models:/NAME@ALIAS`` to their registered version; a
    bundle folder or a ``runs:/`` URI stays unversioned."""
    if Path(uri).is_dir() or not uri.startswith("models:/"):
        return ModelRef(uri=uri, name=None, version=None)
    body = uri.removeprefix("models:/")
    configure(settings)
    client = mlflow_module().MlflowClient()
    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, version = body.partition("/")
            mv = client.get_model_version(name, version)
    except Exception as exc:  # MlflowException: no such model, version or alias
        raise ShopMLError(f"cannot resolve model {uri!r}: {str(exc).splitlines()[0]}") from exc
    return ModelRef(uri=f"models:/{mv.name}/{mv.version}", name=mv.name, version=int(mv.version))


def alias_version(name: str, alias: str, settings: Settings) -> ModelRef | None:
    """The version behind ``name@alias``, or None when the model or alias does not exist."""
    configure(settings)
    client = mlflow_module().MlflowClient()
    try:
        mv = client.get_model_version_by_alias(name, alias)
    except Exception:  # MlflowException: RESOURCE_DOES_NOT_EXIST
        return None
    return ModelRef(uri=f"models:/{mv.name}/{mv.version}", name=mv.name, version=int(mv.version))


def log_evaluation(
    ref: ModelRef, folder: Path, verdict: dict[str, Any], values: dict[str, float]
) -> str:
    """Attach an evaluation to the run that logged ``ref`` and tag its model version:
    the files of ``folder`` under ``evaluation/<eval-set hash>/``, the metrics as
    ``eval_<name>_at_<k>``, and the verdict, eval-set hash and file hashes as tags.
    Returns the run id."""
    client = mlflow_module().MlflowClient()
    mv = client.get_model_version(str(ref.name), str(ref.version))
    run_id = str(mv.run_id)
    eval_hash = verdict["eval_set"]["hash"]
    with quiet_mlflow():
        client.log_artifacts(run_id, str(folder), artifact_path=f"evaluation/{eval_hash[:12]}")
    stamp = int(time.time() * 1000)
    for key, value in values.items():
        if math.isfinite(value):
            name, _, k = key.partition("@")
            client.log_metric(run_id, f"eval_{name}_at_{k}", float(value), timestamp=stamp)
    files = verdict["files"]
    verdict_sha = sha256_file(folder / "verdict.json")
    champion = verdict.get("champion") or {}
    tags = {
        "eval.blessed": str(verdict["blessed"]).lower(),
        "eval.eval_set_hash": eval_hash,
        "eval.snapshot_id": verdict["eval_set"]["snapshot_id"],
        "eval.verdict_sha256": verdict_sha,
        "eval.report_sha256": files["report.html"],
        "eval.summary_sha256": files["summary.md"],
        "eval.champion_version": str(champion.get("version") or "none"),
        "eval.artifacts": f"runs:/{run_id}/evaluation/{eval_hash[:12]}",
    }
    for key, value in tags.items():
        client.set_tag(run_id, f"shopml.{key}", value)
    tag_version(str(ref.name), int(ref.version or 0), tags)
    return run_id
