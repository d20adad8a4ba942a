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

import json
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pipelines.errors import ConfigError, ShopMLError
from pipelines.io import refuse_shared, write_private
from pipelines.registry.models import MODEL_NAME, registered_name
from pipelines.registry.search import SEARCH_EXPERIMENT, SEARCH_MODEL
from pipelines.registry.tracking import (
    EXPERIMENT,
    experiment_location,
    mlflow_module,
    promoter_password,
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


def _private_json(path: Path) -> dict[str, str]:
    """A 0600 JSON file of ``{login: password}``; refused when others may read it."""
    if not path.is_file():
        raise ConfigError(f"no passwords file at {path} (a 0600 JSON file of login: password)")
    refuse_shared(path, "passwords")
    try:
        found = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"{path}: not JSON ({exc})") from exc
    if not isinstance(found, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in found.items()
    ):
        raise ConfigError(f"{path}: expected an object of login: password (non-empty strings)")
    return found


def accounts_from_file(
    settings: Settings,
    passwords_file: Path,
    engineers: Iterable[str] = (),
    *,
    ready: Callable[[], None] = lambda: None,
) -> tuple[Grants, list[str]]:
    """:func:`init_accounts` for a tracking server ``shopml stack up`` did not start (docker
    compose, a cluster), as its admin (the caller's ``MLFLOW_TRACKING_USERNAME``/``PASSWORD``).

    ``passwords_file`` (JSON ``{login: password}``, 0600) holds the pipeline account's
    password and the promoter's (when it does not, the promoter's comes from where promotion
    reads it, :func:`promoter_password`). An engineer the server does not know yet gets a
    generated password, kept in the file (still 0600); one it knows keeps its password and
    the file is not given one. Everything is checked before anything is written; ``ready``
    (e.g. waiting for the server) runs between. Experiments get the server's own artifact
    store: a ``file:`` artifact root of this host means nothing to the server's other
    clients. Returns what was done and the engineers given a new password."""
    from mlflow.exceptions import MlflowException

    admin = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
    if not (admin and os.environ.get("MLFLOW_TRACKING_PASSWORD")):
        raise ConfigError(
            "run as MLflow's admin: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
        )
    uri = settings.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        raise ConfigError(
            f"MLflow accounts need a tracking server (http:// or https://), not {uri!r}; "
            "set SHOPML_MLFLOW_TRACKING_URI"
        )
    known = _private_json(passwords_file)
    engineers = list(dict.fromkeys(engineers))
    promoter = settings.mlflow_promoter_user
    if clash := {PIPELINE_USER, promoter, admin, "admin"} & set(engineers):
        raise ConfigError(f"{', '.join(sorted(clash))}: not an engineer's login")
    if PIPELINE_USER not in known:
        raise ConfigError(f"{passwords_file} holds no password for {PIPELINE_USER!r}")
    promoter_pw = known.get(promoter) or promoter_password(settings)
    if not promoter_pw:
        raise ConfigError(
            f"no password for the MLflow account {promoter!r}: neither {passwords_file} nor "
            f"{settings.mlflow_promoter_password_file} holds one"
        )
    ready()
    generated = [e for e in engineers if e not in known]
    if generated:  # kept before the accounts exist: a crash cannot lose a created password
        known.update({login: secrets.token_urlsafe(18) for login in generated})
        write_private(passwords_file, json.dumps(known, indent=1) + "\n")
    passwords = {login: known[login] for login in (PIPELINE_USER, *engineers)}
    passwords[promoter] = promoter_pw
    if settings.mlflow_artifact_root.startswith("file:"):
        settings = replace(settings, mlflow_artifact_root="")
    try:
        grants = init_accounts(settings, passwords, engineers=engineers)
    except MlflowException as exc:  # not the admin, a wrong password, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShopMLError(f"MLflow at {uri}: {first}") from exc
    if existing := [e for e in generated if e not in grants.users_created]:
        for login in existing:  # the server kept its own password: the file must not lie
            del known[login]
        write_private(passwords_file, json.dumps(known, indent=1) + "\n")
    return grants, [e for e in generated if e in grants.users_created]
