"""Erasing shoppers from MLflow's artifact store (docs/privacy.md).

MLflow keeps whatever was logged; ShopML logs two kinds of files that may name a shopper:

- the bundle of every registered version of the served models and their challengers
  (``shopml-recommender``, ``shopml-search`` and their ``-candidates``): rewritten with the
  shopper's rows blanked (:meth:`Recommender.erase_users`, :meth:`SearchModel.erase_users`)
  in the artifact location the version resolves to (a copy made by promotion resolves to
  its source's, so each location is rewritten once);
- the files of every run (evaluation reports, summaries): the ids replaced by ``[erased]``,
  rows naming them dropped from parquet and JSON-lines files.

Files are written back through MLflow's artifact repository for that location (a local
folder, S3, or the tracking server's proxied ``mlflow-artifacts:``), with the settings'
MLflow account. A version whose bundle was rewritten no longer matches the digest its
evaluation verdict recorded, so promotion refuses it: a challenger trained on an erased
shopper is retrained, not served. What cannot be rewritten (a file of an unknown kind, an
account without write access) is returned as pending.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import sha256_bytes
from pipelines.privacy.bundles import erase_bundle, first_line
from pipelines.privacy.scan import scan_file, scrub_file
from pipelines.registry.models import MODEL_NAME, served_name
from pipelines.registry.search import SEARCH_MODEL
from pipelines.registry.tracking import configure, mlflow_module, quiet_mlflow
from pipelines.settings import Settings

log = logging.getLogger(__name__)
_SERVED = (MODEL_NAME, SEARCH_MODEL)


@dataclass
class MlflowErasure:
    rows: int = 0  # bundle rows blanked
    files: int = 0  # files written back
    versions: list[str] = field(default_factory=list)  # name/version whose bundle was rewritten
    pending: list[str] = field(default_factory=list)


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): sha256_bytes(p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _upload(uri: str, folder: Path, changed: list[str]) -> None:
    """Write the ``changed`` files of ``folder`` back under the artifact location ``uri``."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    repo = get_artifact_repository(uri)
    for rel in changed:
        parent = str(Path(rel).parent)
        repo.log_artifact(str(folder / rel), None if parent == "." else parent)


def _served_models(settings: Settings) -> tuple[Any, list[str]]:
    """A client of the tracking server (or store) the settings name, and ShopML's registered
    models there (served and candidates), sorted; raises when they cannot be listed."""
    configure(settings)
    client = mlflow_module().MlflowClient()
    with quiet_mlflow():
        names = [m.name for m in client.search_registered_models()]
    return client, sorted(n for n in names if served_name(n) in _SERVED)


def erase_mlflow(settings: Settings, forms: list[str]) -> MlflowErasure:
    """Rewrite every registered bundle and run file of ShopML's models that holds one of
    ``forms`` (the shoppers' ids as stored)."""
    out = MlflowErasure()
    try:
        client, models = _served_models(settings)
    except Exception as exc:  # unreachable server, no permission
        out.pending.append(
            f"MLflow {settings.mlflow_tracking_uri}: not searched ({first_line(exc)})"
        )
        return out
    done: set[str] = set()
    for name in models:
        try:
            versions = [int(mv.version) for mv in client.search_model_versions(f"name='{name}'")]
        except Exception as exc:
            out.pending.append(f"MLflow model {name}: versions not listed ({first_line(exc)})")
            continue
        for version in versions:
            _erase_version(client, name, version, forms, done, out)
    try:
        runs = _runs(client)
    except Exception as exc:
        out.pending.append(f"MLflow runs: not listed ({first_line(exc)})")
        return out
    for run_id in runs:
        _erase_run(client, run_id, forms, out)
    return out


def _erase_version(
    client: Any, name: str, version: int, forms: list[str], done: set[str], out: MlflowErasure
) -> None:
    mlflow = mlflow_module()
    where = f"{name}/{version}"
    try:
        uri = str(client.get_model_version_download_uri(name, str(version)))
    except Exception as exc:
        out.pending.append(f"MLflow model {where}: {first_line(exc)}")
        return
    if uri in done:
        return  # a copy of a version already rewritten (same artifacts)
    done.add(uri)
    with tempfile.TemporaryDirectory(prefix="shopml-erase-mlflow-") as tmp:
        try:
            with quiet_mlflow():
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
        except Exception as exc:
            out.pending.append(f"MLflow model {where} ({uri}): {first_line(exc)}")
            return
        if not any(scan_file(p, forms).traces for p in local.rglob("*") if p.is_file()):
            return
        before = _digests(local)
        bundle = local / "artifacts" / "bundle"
        try:
            rows, _ = erase_bundle(served_name(name), bundle, forms)
        except (ShopMLError, OSError, ValueError) as exc:
            out.pending.append(f"MLflow model {where}: the bundle cannot be rewritten ({exc})")
            return
        left = [p for p in local.rglob("*") if p.is_file() and scan_file(p, forms).traces]
        if left:
            out.pending.append(
                f"MLflow model {where}: {left[0].relative_to(local)} still holds the shoppers "
                "after the rewrite; left as it was"
            )
            return
        after = _digests(local)
        changed = sorted(rel for rel, d in after.items() if before.get(rel) != d)
        gone = sorted(set(before) - set(after))
        if gone:
            out.pending.append(
                f"MLflow model {where}: the rewrite drops {gone[0]} (and {len(gone) - 1} more); "
                "left as it was"
            )
            return
        try:
            _upload(uri, local, changed)
        except Exception as exc:  # permission, network
            out.pending.append(f"MLflow model {where}: writing {uri} failed ({first_line(exc)})")
            return
    out.rows += rows
    out.files += len(changed)
    out.versions.append(where)
    log.info("MLflow model %s: %d shopper row(s) blanked, %d file(s) rewritten", where, rows, len(changed))  # fmt: skip


def _runs(client: Any) -> list[str]:
    """Every run, deleted ones too (their artifacts stay until ``mlflow gc``)."""
    from mlflow.entities import ViewType

    ids: list[str] = []
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    if not experiments:
        return ids
    token = None
    while True:
        page = client.search_runs(
            experiments, run_view_type=ViewType.ALL, max_results=1000, page_token=token
        )
        ids.extend(r.info.run_id for r in page)
        token = page.token
        if not token:
            return ids


def _erase_run(client: Any, run_id: str, forms: list[str], out: MlflowErasure) -> None:
    """Scrub a run's own files (evaluation reports and the like)."""
    mlflow = mlflow_module()
    with tempfile.TemporaryDirectory(prefix="shopml-erase-run-") as tmp:
        try:
            if not client.list_artifacts(run_id):
                return
            with quiet_mlflow():
                local = Path(mlflow.artifacts.download_artifacts(run_id=run_id, dst_path=tmp))
        except Exception as exc:
            out.pending.append(f"MLflow run {run_id}: not searched ({first_line(exc)})")
            return
        traced = [p for p in sorted(local.rglob("*")) if p.is_file() and scan_file(p, forms).traces]
        if not traced:
            return
        for path in traced:
            if not scrub_file(path, forms) or scan_file(path, forms).traces:
                out.pending.append(
                    f"MLflow run {run_id}: {path.relative_to(local)} cannot be rewritten"
                )
                return
        changed = [p.relative_to(local).as_posix() for p in traced]
        try:
            _upload(str(client.get_run(run_id).info.artifact_uri), local, changed)
        except Exception as exc:
            out.pending.append(f"MLflow run {run_id}: writing failed ({first_line(exc)})")
            return
    out.files += len(changed)
    log.info("MLflow run %s: %d file(s) scrubbed", run_id, len(changed))


@dataclass
class MlflowScan:
    """What :func:`scan_mlflow` found: traces per artifact, files it could not read, and
    what it could not list."""

    traces: list[tuple[str, int]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    not_searched: list[str] = field(default_factory=list)
    files: int = 0


def scan_mlflow(settings: Settings, forms: list[str]) -> MlflowScan:
    """Every registered bundle of ShopML's models and every run's files, read through the
    tracking server (or store) the settings name: the audit of a remote MLflow."""
    out = MlflowScan()
    mlflow = mlflow_module()
    try:
        client, models = _served_models(settings)
        with quiet_mlflow():
            where: list[tuple[str, dict[str, Any]]] = []
            seen: set[str] = set()
            for name in models:
                for mv in client.search_model_versions(f"name='{name}'"):
                    uri = str(client.get_model_version_download_uri(name, str(mv.version)))
                    if uri not in seen:
                        seen.add(uri)
                        where.append((f"models:/{name}/{mv.version}", {"artifact_uri": uri}))
            where += [(f"runs:/{r}", {"run_id": r}) for r in _runs(client)]
    except Exception as exc:
        out.not_searched.append(f"MLflow {settings.mlflow_tracking_uri}: {first_line(exc)}")
        return out
    for label, source in where:
        with tempfile.TemporaryDirectory(prefix="shopml-audit-mlflow-") as tmp:
            try:
                if "run_id" in source and not client.list_artifacts(source["run_id"]):
                    continue
                with quiet_mlflow():
                    local = Path(mlflow.artifacts.download_artifacts(**source, dst_path=tmp))
            except Exception as exc:
                out.not_searched.append(f"{label}: {first_line(exc)}")
                continue
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                out.files += 1
                found = scan_file(path, forms)
                rel = f"{label}/{path.relative_to(local).as_posix()}"
                if not found.readable:
                    out.unreadable.append(rel)
                elif found.traces:
                    out.traces.append((rel, found.traces))
    return out
