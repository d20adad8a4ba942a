"""Promotion to the serving bucket, and rollback: only what can be proven is served.

A promotion proves three things before it writes anything:

1. **The approval** is Airflow's record of the ``await_review`` task of one DAG run (a
   :class:`Review`, read from Airflow by the caller, never from XCom or MLflow tags):
   answered ``Approve`` by a login that the request was assigned to and that
   ``settings.reviewers`` names.
2. **The verdict** blesses this version: ``verdict.json`` from the evaluation's MLflow
   artifacts, with a valid signature (``verdict.sig``, :mod:`pipelines.keys`), naming this
   model and version, written by the same DAG run as the approval, judged against the
   version served now (a verdict without a champion cannot bless while one is served),
   and the bundle and report files downloaded are exactly those it names.
3. **The bucket** is intact (:func:`pipelines.promotion.verify.verify_model`).

Then: every file of the version, its manifest (last), the ledger entry
(:mod:`pipelines.promotion.ledger`), ``current.json`` naming that entry, and the MLflow
alias ``champion``. Interrupted before the manifest, nothing is served; after the ledger
entry, rerunning the promotion finishes it. A retried promotion of the served version
changes nothing and adds no entry. The bucket's layout is :mod:`pipelines.promotion.layout`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from feature_store.definitions import recommender_ranker
from pipelines.errors import ServiceUnavailableError, ShopMLError
from pipelines.io import folder_digest, sha256_bytes, sha256_file, sha256_json, write_json
from pipelines.keys import signing_key, verify_signature
from pipelines.promotion import erasure, layout, ledger
from pipelines.promotion.bucket import Bucket, open_bucket
from pipelines.promotion.verify import UNFINISHED, Verification, verify_model
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.rows import STORE_ITEM_FEATURES, STORE_USER_FEATURES
from pipelines.registry.models import (
    CHAMPION,
    MODEL_NAME,
    bundle_path,
    registered_name,
    tag_version,
)
from pipelines.registry.search import SEARCH_MODEL
from pipelines.registry.tracking import as_promoter, configure, mlflow_module, quiet_mlflow
from pipelines.settings import Settings

log = logging.getLogger(__name__)
APPROVE = "Approve"
# The approval task of each model in the retrain DAG: an approval answers for one model only
REVIEW_TASKS = {MODEL_NAME: "await_review", SEARCH_MODEL: "await_search_review"}
VERDICT = "verdict.json"
SIGNATURE = "verdict.sig"


@dataclass(frozen=True)
class Review:
    """Airflow's record of one approval request (its HITL detail), as Airflow answered it."""

    dag_id: str
    dag_run: str
    task_id: str
    response_received: bool
    chosen_options: tuple[str, ...]
    responded_by: str | None  # the login (user id) that answered
    responded_at: str | None
    assigned: tuple[str, ...]  # the logins the request was assigned to
    comment: str = ""


@dataclass(frozen=True)
class Outcome:
    action: str  # promote | rollback
    version: int
    previous: int | None
    changed: bool
    entry: dict[str, Any] | None = field(default=None)  # the ledger entry written


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _client(settings: Settings) -> Any:
    configure(settings)
    return mlflow_module().MlflowClient()


def _version(client: Any, name: str, version: int) -> Any:
    try:
        return client.get_model_version(name, str(version))
    except Exception as exc:  # MlflowException: RESOURCE_DOES_NOT_EXIST
        raise ShopMLError(f"model {name} has no version {version}") from exc


def _bucket(settings: Settings) -> Bucket:
    return open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)


def served_version(settings: Settings, name: str) -> int | None:
    """The version ``current.json`` points to (None before the first promotion)."""
    current = layout.read_pointer(_bucket(settings), name)
    return None if current is None else int(current["version"])


def ledger_entries(settings: Settings, name: str) -> list[dict[str, Any]]:
    """Every ledger entry, oldest first. The chain is checked, and a ledger that is gone
    while ``current.json`` still serves a version is an error, never "no promotions"."""
    bucket = _bucket(settings)
    entries = ledger.read_ledger(bucket, name)
    if not entries and layout.read_pointer(bucket, name) is not None:
        raise ledger.LedgerError(
            f"{bucket.url(ledger.folder(name))}: empty or deleted while "
            f"{bucket.url(layout.pointer_key(name))} serves a version; the ledger is damaged"
        )
    return [e.body for e in entries]


def verify(settings: Settings, name: str) -> Verification:
    """``shopml promotions verify``: the whole model (ledger, pointer, every version)."""
    return verify_model(_bucket(settings), name)


# ----------------------------------------------------------------------------- checks


def check_review(
    review: Review, settings: Settings, *, version: int, name: str = MODEL_NAME
) -> None:
    """Refuse unless ``review`` is the approval request of model ``name``, approves and
    was answered by an assigned reviewer."""
    where = f"the approval request of {review.dag_id} run {review.dag_run}"
    expected = REVIEW_TASKS.get(name)
    if expected is None:
        raise ShopMLError(f"no approval task is defined for model {name!r}")
    if review.task_id != expected:
        raise ShopMLError(
            f"{where} is task {review.task_id!r}, the approval of another model; {name} is "
            f"approved by task {expected!r} only"
        )
    if not review.response_received:
        raise ShopMLError(
            f"{where} has no answer from a reviewer (its task was marked done without one); "
            f"version {version} is not promoted"
        )
    if review.chosen_options != (APPROVE,):
        raise ShopMLError(f"{where} was answered {list(review.chosen_options)}, not Approve")
    who = review.responded_by or ""
    if who not in review.assigned:
        raise ShopMLError(
            f"{where} was answered by {who or 'nobody'!r}, who is not assigned to it "
            f"(assigned: {', '.join(review.assigned) or 'none'})"
        )
    if who not in settings.reviewers:
        raise ShopMLError(
            f"{where} was answered by {who!r}, who is not a configured reviewer "
            f"(SHOPML_REVIEWERS: {', '.join(settings.reviewers)})"
        )


@dataclass(frozen=True)
class SignedVerdict:
    body: dict[str, Any]
    sha256: str
    folder: Path  # the evaluation's files: verdict.json, verdict.sig, report.html, summary.md


def load_verdict(mv: Any, name: str, version: int, settings: Settings, dst: Path) -> SignedVerdict:
    """The version's verdict from its evaluation artifacts, refused unless the signature
    holds and it names this model version and lists its report files' digests."""
    artifacts = (mv.tags or {}).get("eval.artifacts", "")
    if not str(artifacts).startswith("runs:/"):
        raise ShopMLError(
            f"{name} version {version} has no evaluation (tag eval.artifacts is "
            f"{artifacts or 'missing'!r}); run the retrain DAG, which evaluates it"
        )
    try:
        with quiet_mlflow():
            folder = Path(
                mlflow_module().artifacts.download_artifacts(
                    artifact_uri=str(artifacts), dst_path=str(dst)
                )
            )
    except Exception as exc:  # MlflowException: no such run or path
        raise ShopMLError(
            f"{name} version {version}: cannot read its evaluation {artifacts}: "
            f"{str(exc).splitlines()[0]}"
        ) from exc
    raw_path, sig_path = folder / VERDICT, folder / SIGNATURE
    if not raw_path.is_file() or not sig_path.is_file():
        raise ShopMLError(f"{artifacts}: no signed verdict ({VERDICT} and {SIGNATURE}) there")
    raw = raw_path.read_bytes()
    if not verify_signature(raw, sig_path.read_text(), signing_key(settings)):
        raise ShopMLError(
            f"{artifacts}/{VERDICT}: its signature does not hold: the verdict was not written "
            "by ShopML's evaluation, or was edited since; it cannot bless a promotion"
        )
    try:
        body = json.loads(raw)
        model = body["model"]
        files = body["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ShopMLError(f"{artifacts}/{VERDICT}: not a verdict ({exc})") from exc
    if (model.get("name"), model.get("version")) != (name, version):
        raise ShopMLError(
            f"{artifacts}/{VERDICT} judges {model.get('name')} version {model.get('version')}, "
            f"not {name} version {version}"
        )
    if body.get("blessed") is not True:
        raise ShopMLError(f"{name} version {version} was not blessed: {artifacts}/{VERDICT}")
    for file in layout.REPORT_FILES[1:]:
        if not (folder / file).is_file() or sha256_file(folder / file) != files.get(file):
            raise ShopMLError(f"{artifacts}/{file}: missing or not the file the verdict names")
    return SignedVerdict(body, sha256_bytes(raw), folder)


def check_verdict(verdict: SignedVerdict, review: Review, served: int | None) -> None:
    """The verdict comes from the approving DAG run and was judged against the version
    served now."""
    body = verdict.body
    if body.get("dag_run") != review.dag_run:
        raise ShopMLError(
            f"the verdict was written by DAG run {body.get('dag_run')!r}, but the approval "
            f"belongs to run {review.dag_run!r}: an approval only promotes what its own run "
            "evaluated"
        )
    champion = (body.get("champion") or {}).get("version")
    if served is not None and (not body.get("compared_with_champion") or champion is None):
        raise ShopMLError(
            f"the verdict was judged without a champion while version {served} is served; "
            "evaluate against the champion again"
        )
    if champion != served:
        raise ShopMLError(
            f"the verdict was judged against version {champion}, but version {served} is "
            "served now (stale verdict); evaluate against the current champion again"
        )


# ----------------------------------------------------------------------------- writing


def _stage(
    name: str, source: str, verdict: SignedVerdict, settings: Settings, out: Path
) -> dict[str, Any]:
    """Gather the files of the registered version ``source`` (``models:/NAME/VERSION``)
    served as model ``name`` into ``out``; return the manifest's metadata."""
    bundle = bundle_path(source, settings, out / "_model")
    expected = verdict.body["model"].get("bundle_sha256")
    if folder_digest(bundle) != expected:
        raise ShopMLError(
            f"the bundle of {source} in MLflow is not the one its verdict "
            "scored (artifacts changed after the evaluation); it is not promoted"
        )
    shutil.copytree(bundle, out / layout.BUNDLE)
    (out / layout.REPORT).mkdir()
    for file in layout.REPORT_FILES:
        shutil.copyfile(verdict.folder / file, out / layout.REPORT / file)
    if name == MODEL_NAME:
        _stage_features(out)
    shutil.rmtree(out / "_model", ignore_errors=True)
    return {
        "snapshot_id": verdict.body["eval_set"]["snapshot_id"],
        "eval_set_hash": verdict.body["eval_set"]["hash"],
        "verdict_sha256": verdict.sha256,
        "report_sha256": verdict.body["files"]["report.html"],
        "bundle_sha256": expected,
    }


def _stage_features(out: Path) -> None:
    """The recommender's feature service and the feature values its bundle serves with
    (a search bundle carries its own: the index and the shoppers' profiles)."""
    service = {
        "name": recommender_ranker.name,
        "features": [
            f"{p.name}:{field.name}"
            for p in recommender_ranker.feature_view_projections
            for field in p.features
        ],
    }
    write_json(out / layout.FEATURE_SERVICE, service)
    write_feature_values(Recommender.load(out / layout.BUNDLE), out / layout.FEATURES)


def write_feature_values(rec: Recommender, folder: Path, *, items: bool = True) -> None:
    """``users.parquet`` (and ``items.parquet``): the store's feature values the bundle
    serves with, one row per user (item) of the bundle, in its order."""
    folder.mkdir(parents=True, exist_ok=True)
    users = pd.DataFrame({"user_id": rec.ctx.user_ids.astype(str)})
    if rec.store is not None:
        users = users.join(pd.DataFrame(rec.store.users, columns=list(STORE_USER_FEATURES)))
    users.to_parquet(folder / "users.parquet", index=False)
    if items:
        table = pd.DataFrame({"item_id": rec.ctx.item_ids.astype(str)})
        if rec.store is not None:
            table = table.join(pd.DataFrame(rec.store.items, columns=list(STORE_ITEM_FEATURES)))
        table.to_parquet(folder / "items.parquet", index=False)


def _upload(bucket: Bucket, name: str, version: int, staged: Path, meta: dict[str, Any]) -> None:
    """Every staged file, then the manifest listing them (last: it completes the version)."""
    files: dict[str, str] = {}
    for f in sorted(p for p in staged.rglob("*") if p.is_file()):
        rel = f.relative_to(staged).as_posix()
        data = f.read_bytes()
        bucket.put(layout.version_key(name, version, rel), data)
        files[rel] = sha256_bytes(data)
    body = layout.manifest_body(name, version, files, meta, _now())
    bucket.put(layout.version_key(name, version, layout.MANIFEST), body)


def _point(bucket: Bucket, name: str, manifest: dict[str, Any], entry: ledger.Entry) -> None:
    body = layout.pointer_body(
        name,
        entry.version,
        entry.body.get("previous_version"),
        manifest,
        entry.seq,
        entry.sha256,
        _now(),
    )
    bucket.put(layout.pointer_key(name), body)


def _finish(bucket: Bucket, name: str, entry: ledger.Entry, settings: Settings) -> None:
    """Point ``current.json`` at ``entry``'s version and move the MLflow alias."""
    manifest = layout.verify_version(bucket, name, entry.version)
    if manifest is None or sha256_json(manifest) != entry.body.get("manifest_sha256"):
        raise ShopMLError(f"{name} version {entry.version} does not verify; not served")
    _point(bucket, name, manifest, entry)
    _write(_client(settings).set_registered_model_alias, name, CHAMPION, str(entry.version))


def served_model(name: str | None) -> str:
    """``name`` when it is a model ShopML serves (default: the recommender), else an error."""
    name = name or MODEL_NAME
    if name not in REVIEW_TASKS:
        raise ShopMLError(f"unknown model {name!r}: ShopML serves {', '.join(REVIEW_TASKS)}")
    return name


def promote(
    *, version: int, settings: Settings, review: Review, name: str | None = None
) -> Outcome:
    """Serve the registered challenger ``version`` once every proof holds (module
    docstring). With ``registry_candidates``, ``version`` is a version of
    ``<name>-candidates``: once proven it is copied into ``name`` as the promoter account
    (a retry finds the copy it made), and the bucket, ledger and alias use the copy's
    number. The outcome's version is the served model's."""
    name = served_model(name)
    source = registered_name(name, settings)
    with as_promoter(settings), _bucket_errors(settings, f"promoting {name}"):
        if source == name:
            return _promote(name, version, settings, review, source, version)
        client = _client(settings)
        copied = _copy_of(client, name, source, version)
        if copied is None:  # prove before anything enters the served model
            bucket = _bucket(settings)
            state = verify_model(bucket, name, versions=[])
            state.require_intact(f"promoting {source} version {version}")
            check_review(review, settings, version=version, name=name)
            served = None if state.pointer is None else int(state.pointer["version"])
            mv = _version(client, source, version)
            with tempfile.TemporaryDirectory(prefix="shopml-promote-") as tmp:
                verdict = load_verdict(mv, source, version, settings, Path(tmp) / "evaluation")
                check_verdict(verdict, review, served)
            copied = int(
                _write(client.copy_model_version, f"models:/{source}/{version}", name).version
            )
            log.info("copied %s version %d to %s version %d", source, version, name, copied)
        return _promote(name, copied, settings, review, source, version)


@contextmanager
def _bucket_errors(settings: Settings, action: str) -> Iterator[None]:
    """The bucket's store unreachable or failing (S3 down, a network error): one message,
    as a :class:`ServiceUnavailableError` (a DAG task retries it). Whatever the failed
    write was, ``current.json`` only ever names a verified version whose ledger entry
    exists, so nothing half-done is served and running the promotion again finishes it."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise ServiceUnavailableError(
            f"{action}: the serving bucket {settings.serving_bucket_uri} failed "
            f"({str(exc).splitlines()[0]}); what is served did not change; run it again"
        ) from exc


def _copy_of(client: Any, name: str, source: str, version: int) -> int | None:
    """The version of ``name`` copied from ``source`` ``version`` (MLflow records the copy's
    source as ``models:/SOURCE/VERSION``), or None."""
    uri = f"models:/{source}/{version}"
    found = [
        int(mv.version)
        for mv in client.search_model_versions(f"name = '{name}'")
        if mv.source == uri
    ]
    return min(found) if found else None


def _write(call: Any, *args: Any) -> Any:
    """An MLflow registry write; refused permission becomes a message naming the account."""
    try:
        return call(*args)
    except Exception as exc:  # MlflowException with PERMISSION_DENIED / 403
        text = str(exc)
        if "PERMISSION_DENIED" in text or "403" in text or "Permission denied" in text:
            who = os.environ.get("MLFLOW_TRACKING_USERNAME") or "this process's MLflow account"
            raise ShopMLError(
                f"MLflow refused {who} the registry write ({text.splitlines()[0]}); promotion "
                "and rollback move 'champion' as the promoter account: configure "
                "mlflow_promoter_user and its password (docs/operations.md)"
            ) from exc
        raise


def _promote(
    name: str, version: int, settings: Settings, review: Review, source: str, source_version: int
) -> Outcome:
    """Serve ``version`` of ``name``, registered as ``source`` ``source_version`` (the same
    model and number without registry_candidates)."""
    bucket = _bucket(settings)
    state = _finishing_erasures(bucket, name, versions=[version], pending=version)
    state.require_intact(f"promoting {name} version {version}")
    check_review(review, settings, version=source_version, name=name)
    served = None if state.pointer is None else int(state.pointer["version"])
    head = state.head
    if (
        head is not None
        and head.body["action"] == "promote"
        and head.version == version
        and head.body.get("dag_run") == review.dag_run
    ):
        if any(p.kind == UNFINISHED for p in state.problems):  # interrupted after the entry
            _finish(bucket, name, head, settings)
            return Outcome("promote", version, head.body.get("previous_version"), True, head.body)
        _write(_client(settings).set_registered_model_alias, name, CHAMPION, str(version))
        log.info("%s version %d is already served; nothing to do", name, version)
        return Outcome("promote", version, head.body.get("previous_version"), False, None)
    if served == version:
        previous = None if state.pointer is None else state.pointer.get("previous_version")
        # the alias too: a promotion interrupted before it moved the alias, then erased
        _write(_client(settings).set_registered_model_alias, name, CHAMPION, str(version))
        log.info("%s version %d is already served; nothing to do", name, version)
        return Outcome("promote", version, previous, False, None)
    client = _client(settings)
    mv = _version(client, source, source_version)
    with tempfile.TemporaryDirectory(prefix="shopml-promote-") as tmp:
        verdict = load_verdict(mv, source, source_version, settings, Path(tmp) / "evaluation")
        check_verdict(verdict, review, served)
        manifest = layout.verify_version(bucket, name, version)
        if manifest is None:
            staged = Path(tmp) / "version"
            staged.mkdir()
            meta = _stage(name, f"models:/{source}/{source_version}", verdict, settings, staged)
            _upload(bucket, name, version, staged, meta)
            manifest = layout.verify_version(bucket, name, version)
            if manifest is None:
                raise ShopMLError(
                    f"{bucket.url(layout.version_prefix(name, version))}: upload did not verify"
                )
        elif manifest.get("verdict_sha256") != verdict.sha256:
            raise ShopMLError(
                f"{bucket.url(layout.version_key(name, version, layout.MANIFEST))}: uploaded "
                "with another verdict than the one approved; not served"
            )
    entry = ledger.append(
        bucket,
        name,
        {
            "action": "promote",
            "model": name,
            "version": version,
            "previous_version": served,
            "approved_by": review.responded_by,
            "approved_at": review.responded_at,
            "comment": review.comment,
            "time": _now(),
            "verdict_sha256": manifest.get("verdict_sha256"),
            "report_sha256": manifest.get("report_sha256"),
            "manifest_sha256": sha256_json(manifest),
            "snapshot_id": manifest.get("snapshot_id"),
            "dag_run": review.dag_run,
            **({"source": f"{source}/{source_version}"} if source != name else {}),
        },
        precondition=erasure.unchanged_since(version, sha256_json(manifest), "promoting"),
    )
    _finish(bucket, name, entry, settings)
    record_approval(name, version, review, settings)
    return Outcome("promote", version, served, True, entry.body)


def _finishing_erasures(
    bucket: Bucket, name: str, *, versions: list[int], pending: int | None = None
) -> Verification:
    """The bucket's verification, after finishing an erasure interrupted after its ledger
    entry (:mod:`pipelines.promotion.erasure`): promotion and rollback do not stay blocked
    until the next ``forget``."""
    state = verify_model(bucket, name, versions=versions, pending=pending)
    unfinished = any(p.kind == UNFINISHED for p in state.problems)
    if erasure.finish_unfinished(bucket, name, state.entries, unfinished):
        log.info("%s: finished an interrupted erasure first", name)
        state = verify_model(bucket, name, versions=versions, pending=pending)
    return state


def record_approval(name: str, version: int, review: Review, settings: Settings) -> None:
    """Tag the model version with the approval that promoted it (for people reading MLflow;
    promotion itself never trusts these tags)."""
    tag_version(
        name,
        version,
        {
            "review.approved_by": review.responded_by or "",
            "review.dag_run": review.dag_run,
            "review.comment": review.comment,
            "review.approved_at": review.responded_at or "",
        },
    )


def rollback(
    *,
    to_version: int,
    reason: str,
    settings: Settings,
    requested_by: str,
    name: str | None = None,
    dag_run: str | None = None,
) -> Outcome:
    """Serve an earlier promoted ``to_version`` again: ledger entry, pointer, alias.
    ``requested_by`` is the authenticated login that asked (the DAG run's triggering user)."""
    with as_promoter(settings), _bucket_errors(settings, f"rolling back {name or MODEL_NAME}"):
        return _rollback(to_version, reason, settings, requested_by, served_model(name), dag_run)


def _rollback(
    to_version: int,
    reason: str,
    settings: Settings,
    requested_by: str,
    name: str,
    dag_run: str | None,
) -> Outcome:
    if len(reason.strip()) < 3:
        raise ShopMLError("a rollback needs a reason (at least 3 characters)")
    if not requested_by:
        raise ShopMLError("a rollback needs the authenticated login that asked for it")
    bucket = _bucket(settings)
    action = f"rolling back {name} to version {to_version}"
    state = _finishing_erasures(bucket, name, versions=[])
    state.require_intact(action)
    promoted = sorted({e.version for e in state.entries if e.body["action"] == "promote"})
    if to_version not in promoted:
        raise ShopMLError(
            f"{name} version {to_version} was never promoted (promoted: "
            f"{', '.join(map(str, promoted)) or 'none'}); only those can be served again"
        )
    verify_model(bucket, name, versions=[to_version]).require_intact(action)
    served = None if state.pointer is None else int(state.pointer["version"])
    if served == to_version:
        raise ShopMLError(f"{name} version {to_version} is already the served version")
    manifest = layout.read_manifest(bucket, name, to_version) or {}
    entry = ledger.append(
        bucket,
        name,
        {
            "action": "rollback",
            "model": name,
            "version": to_version,
            "previous_version": served,
            "requested_by": requested_by,
            "reason": reason,
            "time": _now(),
            "verdict_sha256": manifest.get("verdict_sha256"),
            "report_sha256": manifest.get("report_sha256"),
            "manifest_sha256": sha256_json(manifest),
            "snapshot_id": manifest.get("snapshot_id"),
            "dag_run": dag_run,
        },
        precondition=erasure.unchanged_since(to_version, sha256_json(manifest), "rolling back"),
    )
    _finish(bucket, name, entry, settings)
    return Outcome("rollback", to_version, served, True, entry.body)
