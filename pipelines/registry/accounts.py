"""MLflow accounts and permissions of the production shape (a tracking server run with
MLflow's basic-auth app, ``default_permission = READ``).

MLflow's open-source registry lets any account that may register a version of a model also
move its aliases (EDIT allows both), so ShopML separates the two (docs/operations.md):

- ``shopml-pipeline`` (the retrain DAG's tasks): EDIT on the candidates models
  (``shopml-recommender-candidates``, ``shopml-search-candidates``), where challengers are
  registered and evaluated, and on ShopML's experiments; READ elsewhere.
- ``shopml-promoter`` (promotion and rollback only): EDIT on the served models
  (``shopml-recommender``, ``shopml-search``): it copies an approved challenger into them
  and moves ``champion``.
- engineers: READ on every model (load any version, see every alias) and EDIT on the
  experiments (log runs); they cannot move an alias of a served model.

The served models are created here, by the admin, so no other account can create one
first and own it (MLflow gives a model's creator MANAGE on it).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.registry.models import MODEL_NAME, registered_name
from pipelines.registry.search import SEARCH_EXPERIMENT, SEARCH_MODEL
from pipelines.registry.tracking import (
    EXPERIMENT,
    experiment_location,
    mlflow_module,
    quiet_mlflow,
)
from pipelines.settings import Settings

log = logging.getLogger(__name__)
PIPELINE_USER = "shopml-pipeline"
SERVED_MODELS = (MODEL_NAME, SEARCH_MODEL)
EXPERIMENTS = (EXPERIMENT, SEARCH_EXPERIMENT)


@dataclass(frozen=True)
class Grants:
    """What :func:`init_accounts` did (for the log and ``shopml stack init``)."""

    users_created: list[str] = field(default_factory=list)
    models_created: list[str] = field(default_factory=list)
    granted: list[str] = field(default_factory=list)  # "user EDIT registered_model NAME"


def init_accounts(
    settings: Settings,
    passwords: Mapping[str, str],
    *,
    engineers: Iterable[str] = (),
    pipeline_user: str = PIPELINE_USER,
) -> Grants:
    """As the admin (the caller's ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``): create the
    accounts of ``passwords`` that do not exist, ShopML's served and candidates models and
    experiments, and the grants of the module docstring. Safe to run again: what exists is
    kept (passwords of existing accounts are not changed)."""
    from mlflow.server import get_app_client

    uri = settings.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        raise ShopMLError(
            f"MLflow accounts need a tracking server (http:// or https://), not {uri!r}"
        )
    promoter = settings.mlflow_promoter_user
    engineers = list(engineers)
    for user in (pipeline_user, promoter, *engineers):
        if user not in passwords:
            raise ShopMLError(f"no password given for the MLflow account {user!r}")
    auth: Any = get_app_client("basic-auth", tracking_uri=uri)
    mlflow = mlflow_module()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient()
    out = Grants()
    for user, password in passwords.items():
        try:
            auth.get_user(user)
        except Exception:  # RESOURCE_DOES_NOT_EXIST
            auth.create_user(user, password)
            out.users_created.append(user)

    def grant(user: str, kind: str, resource: str, permission: str, label: str) -> None:
        try:
            auth.grant_user_permission(user, kind, resource, permission)
        except Exception as exc:  # a grant exists (an earlier init): set it to this one
            if "RESOURCE_ALREADY_EXISTS" not in str(exc):
                raise
            auth.revoke_user_permission(user, kind, resource)
            auth.grant_user_permission(user, kind, resource, permission)
        out.granted.append(f"{user} {permission} {kind} {label}")

    for name in SERVED_MODELS:
        for model in dict.fromkeys((name, registered_name(name, settings))):
            if _create_model(client, model):
                out.models_created.append(model)
        grant(promoter, "registered_model", name, "EDIT", name)
        candidates = registered_name(name, settings)
        if candidates != name:
            grant(pipeline_user, "registered_model", candidates, "EDIT", candidates)
    for experiment in EXPERIMENTS:
        found = client.get_experiment_by_name(experiment)
        # where configure() would put it: the server's default in production (proxied S3)
        location = experiment_location(settings, experiment)
        exp_id = (
            found.experiment_id
            if found
            else client.create_experiment(experiment, artifact_location=location)
        )
        for user in (pipeline_user, *engineers):
            grant(user, "experiment", str(exp_id), "EDIT", experiment)
    log.info(
        "MLflow accounts: %d created, %d models created, %d grants",
        len(out.users_created), len(out.models_created), len(out.granted),
    )  # fmt: skip
    return out


def _create_model(client: Any, name: str) -> bool:
    try:
        with quiet_mlflow():
            client.create_registered_model(name)
    except Exception as exc:  # RESOURCE_ALREADY_EXISTS
        if "RESOURCE_ALREADY_EXISTS" in str(exc) or "already exists" in str(exc):
            return False
        raise
    return True
