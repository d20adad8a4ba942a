"""MLflow tracking and registry for trained recommenders.

One parent run per training run (tags: snapshot id, git commit, config hash, and the
Airflow dag_id/run_id when a DAG task runs it), a child run per candidate generator and
one for the ranker. The whole bundle is one pyfunc model registered as
``shopml-recommender``; each new version gets the alias ``challenger`` (``champion`` is
only ever moved by promotion) and tags with its metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from pipelines.errors import ShopMLError
from pipelines.recommender.bundle import Recommender
from pipelines.settings import Settings

log = logging.getLogger(__name__)
EXPERIMENT = "shopml-recommender"
MODEL_NAME = "shopml-recommender"
CHALLENGER = "challenger"
CHAMPION = "champion"  # moved only by promotion
MODEL_ARTIFACT = "recommender"
# Packages the pyfunc model needs where it is loaded (ShopML itself included).
_REQUIREMENTS = ("mlflow", "lightgbm", "implicit", "pandas", "numpy", "scipy", "pyarrow", "shopml")


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return mlflow


def configure(settings: Settings, experiment: str = EXPERIMENT) -> str:
    """Point MLflow at the settings' tracking store; get or create the experiment (its
    artifacts under the settings' artifact root). Returns the experiment id."""
    mlflow = _mlflow()
    uri = settings.mlflow_tracking_uri
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        location = f"{settings.mlflow_artifact_root.rstrip('/')}/{experiment}"
        exp_id = str(client.create_experiment(experiment, artifact_location=location))
    else:
        exp_id = str(exp.experiment_id)
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp_id)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id


def git_commit() -> str:
    """The commit of the ShopML checkout this code runs from ("unknown" outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_tags(snapshot_id: str, config: dict[str, Any]) -> dict[str, str]:
    tags = {
        "shopml.snapshot_id": snapshot_id,
        "shopml.git_commit": git_commit(),
        "shopml.config_hash": config_hash(config),
    }
    # Airflow exports these to every task process (AIRFLOW_CTX_*).
    for env, tag in (
        ("AIRFLOW_CTX_DAG_ID", "airflow.dag_id"),
        ("AIRFLOW_CTX_DAG_RUN_ID", "airflow.run_id"),
    ):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def flatten(prefix: str, value: Any) -> dict[str, Any]:
    """Nested config dicts as ``a.b.c`` params."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


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


def predict_frame(rec: Recommender, frame: pd.DataFrame, *, k: int, explain: bool) -> pd.DataFrame:
    """Recommendations for the users of ``frame`` (the pyfunc and the CLI share this)."""
    if "user_id" not in frame.columns:
        raise ShopMLError(f"the input needs a user_id column; it has {list(frame.columns)}")

    def column(name: str) -> Any:
        if name not in frame.columns:
            return None
        return [
            None if v is None or (isinstance(v, float) and np.isnan(v)) else v for v in frame[name]
        ]

    recent = column("recent_items")
    out = rec.recommend(
        frame["user_id"].astype(str).tolist(),
        k,
        explain_top=explain,
        age=None if "age" not in frame else pd.to_numeric(frame["age"], errors="coerce").tolist(),
        gender=column("gender"),
        region=column("region"),
        recent_items=None if recent is None else [list(r) if r is not None else [] for r in recent],
    )
    if explain and "reasons" not in out.columns:
        out["reasons"] = pd.Series(dtype=str)
    return out


def _requirements() -> list[str]:
    out = []
    for package in _REQUIREMENTS:
        try:
            out.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            continue
    return out


@contextmanager
def quiet_mlflow() -> Iterator[None]:
    """Hide MLflow's notices about pickling the model and registering it."""
    loggers = [
        logging.getLogger(n) for n in ("mlflow.pyfunc", "mlflow.models.model", "mlflow.store")
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


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
    mlflow = _mlflow()
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
                pip_requirements=_requirements(),
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
    client = _mlflow().MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, str(value))


def load_recommender(uri: str, settings: Settings) -> Recommender:
    """The bundle behind a model URI (``models:/shopml-recommender@challenger``,
    ``models:/shopml-recommender/3``, ``runs:/...``) or a local bundle folder."""
    local = Path(uri)
    if local.is_dir():
        return Recommender.load(
            local / "artifacts" / "bundle" if (local / "MLmodel").is_file() else local
        )
    mlflow = _mlflow()
    configure(settings)
    try:
        with quiet_mlflow():
            path = mlflow.artifacts.download_artifacts(artifact_uri=uri)
    except Exception as exc:  # MlflowException, missing version, bad alias, ...
        raise ShopMLError(f"cannot load model {uri!r}: {str(exc).splitlines()[0]}") from exc
    return Recommender.load(Path(path) / "artifacts" / "bundle")


def load_pyfunc(uri: str) -> Any:
    """The registered pyfunc (for callers that want MLflow's interface)."""
    with quiet_mlflow():
        return _mlflow().pyfunc.load_model(uri, suppress_warnings=True)


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
    client = _mlflow().MlflowClient()
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
    client = _mlflow().MlflowClient()
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
    import math

    client = _mlflow().MlflowClient()
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
    verdict_sha = hashlib.sha256((folder / "verdict.json").read_bytes()).hexdigest()
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
