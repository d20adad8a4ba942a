"""The serving bucket's layout: one module that promotion writes and serving reads.

Under the serving bucket URI (``file:///...`` or ``s3://bucket/prefix``)::

    <model>/versions/<version>/bundle/...              the model bundle
    <model>/versions/<version>/feature_service.json    the features the ranker reads (recommender)
    <model>/versions/<version>/features/users.parquet  the feature values the bundle serves with
    <model>/versions/<version>/features/items.parquet  (recommender; a search bundle holds its own)
    <model>/versions/<version>/report/...              verdict.json, report.html, summary.md
    <model>/versions/<version>/manifest.json           sha256 of every file: written last
    <model>/ledger/00000001.json ...                   one entry per promotion, rollback or erasure
    <model>/erasing/<version>/...                      a version being rewritten (pipelines.privacy.bundles)
    <model>/current.json                               the served version and the ledger head

``<model>`` is ``shopml-recommender`` or ``shopml-search``. A version is complete when its manifest exists and every file it lists matches its
sha256; ``current.json`` only ever points at a complete version, and names the ledger
entry that made it current (:mod:`pipelines.promotion.ledger`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.errors import ShopMLError
from pipelines.io import dumps, sha256_bytes, sha256_json, write_bytes
from pipelines.promotion.bucket import Bucket

MANIFEST = "manifest.json"
POINTER = "current.json"
BUNDLE = "bundle"
FEATURES = "features"
REPORT = "report"
FEATURE_SERVICE = "feature_service.json"
REPORT_FILES = ("verdict.json", "report.html", "summary.md")


class LayoutError(ShopMLError):
    """A file of the bucket's layout is missing, unreadable or inconsistent."""


def version_prefix(model: str, version: int) -> str:
    return f"{model}/versions/{version}"


def version_key(model: str, version: int, rel: str) -> str:
    """The key of the file ``rel`` (e.g. ``bundle/ranker.txt``) of one version."""
    return f"{version_prefix(model, version)}/{rel}"


def pointer_key(model: str) -> str:
    return f"{model}/{POINTER}"


def json_object(
    bucket: Bucket, key: str, raw: bytes | None, error: type[ShopMLError] = LayoutError
) -> dict[str, Any] | None:
    """The JSON object stored at ``key`` (``raw``: its bytes; None when absent); raises
    ``error`` naming the key when the bytes are not a JSON object."""
    if raw is None:
        return None
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{bucket.url(key)}: not valid JSON ({exc}); cut or edited") from exc
    if not isinstance(body, dict):
        raise error(f"{bucket.url(key)}: not a JSON object but a {type(body).__name__}")
    return body


def read_pointer(bucket: Bucket, model: str) -> dict[str, Any] | None:
    """``current.json`` of ``model`` (None before the first promotion); raises
    :class:`LayoutError` naming the key when it is not a valid pointer."""
    key = pointer_key(model)
    body = json_object(bucket, key, bucket.get(key))
    if body is None:
        return None
    for name in ("version", "ledger_seq"):
        value = body.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LayoutError(f"{bucket.url(key)}: {name} {value!r} is not a positive number")
    if not isinstance(body.get("ledger_head"), str) or not isinstance(
        body.get("manifest_sha256"), str
    ):
        raise LayoutError(f"{bucket.url(key)}: names no ledger head or manifest sha256")
    return dict(body)


def read_manifest(bucket: Bucket, model: str, version: int) -> dict[str, Any] | None:
    """The version's manifest (None when it has none); :class:`LayoutError` when it is
    not valid JSON or lists no files."""
    key = version_key(model, version, MANIFEST)
    body = json_object(bucket, key, bucket.get(key))
    if body is None:
        return None
    if not isinstance(body.get("files"), dict):
        raise LayoutError(f"{bucket.url(key)}: a manifest lists its files")
    return dict(body)


def version_problems(
    bucket: Bucket, model: str, version: int
) -> tuple[dict[str, Any] | None, list[str]]:
    """The version's manifest and what is wrong with its files: each listed file missing
    or with another sha256, and files the manifest does not list (each message names the
    key)."""
    try:
        manifest = read_manifest(bucket, model, version)
    except LayoutError as exc:
        return None, [str(exc)]
    if manifest is None:
        return None, [f"{bucket.url(version_key(model, version, MANIFEST))}: missing"]
    problems = []
    for rel, digest in sorted(manifest["files"].items()):
        key = version_key(model, version, rel)
        data = bucket.get(key)
        if data is None:
            problems.append(f"{bucket.url(key)}: listed in the manifest but missing")
        elif sha256_bytes(data) != digest:
            problems.append(f"{bucket.url(key)}: sha256 differs from the manifest (file altered)")
    listed = {version_key(model, version, rel) for rel in manifest["files"]}
    listed.add(version_key(model, version, MANIFEST))
    for key in bucket.keys(version_prefix(model, version)):
        if key not in listed:
            problems.append(f"{bucket.url(key)}: not listed in the manifest (file added)")
    return manifest, problems


def copy_version(
    bucket: Bucket,
    model: str,
    version: int,
    manifest: dict[str, Any],
    to: Path,
    error: type[ShopMLError] = LayoutError,
) -> None:
    """Every file ``manifest`` lists, each read once and checked against its sha256, into
    the folder ``to``; raises ``error`` naming the key when the version folder holds a file
    the manifest does not list, or a listed file is missing or altered."""
    files = manifest["files"]
    listed = {version_key(model, version, rel) for rel in files}
    listed.add(version_key(model, version, MANIFEST))
    extra = [k for k in bucket.keys(version_prefix(model, version)) if k not in listed]
    if extra:
        raise error(f"{bucket.url(extra[0])}: not listed in the manifest (file added)")
    for rel, digest in sorted(files.items()):
        key = version_key(model, version, rel)
        data = bucket.get(key)
        if data is None:
            raise error(f"{bucket.url(key)}: listed in the manifest but missing")
        if sha256_bytes(data) != digest:
            raise error(f"{bucket.url(key)}: sha256 differs from the manifest (file altered)")
        write_bytes(to / rel, data)


def verify_version(bucket: Bucket, model: str, version: int) -> dict[str, Any] | None:
    """The version's manifest when it and every file it lists are intact, else None."""
    manifest, problems = version_problems(bucket, model, version)
    return None if problems else manifest


def manifest_body(
    model: str, version: int, files: dict[str, str], meta: dict[str, Any], created_at: str
) -> bytes:
    """The manifest of a version: ``files`` (relative path -> sha256) and ``meta``."""
    body = {"model": model, "version": version, **meta, "files": files, "created_at": created_at}
    return dumps(body, sort_keys=True).encode()


def pointer_body(
    model: str,
    version: int,
    previous: int | None,
    manifest: dict[str, Any],
    ledger_seq: int,
    ledger_head: str,
    updated_at: str,
) -> bytes:
    """``current.json``: the served version, the one before, its manifest's digest, and
    the ledger entry (number and sha256) that made it current."""
    body = {
        "model": model,
        "version": version,
        "previous_version": previous,
        "manifest_sha256": sha256_json(manifest),
        "ledger_seq": ledger_seq,
        "ledger_head": ledger_head,
        "updated_at": updated_at,
    }
    return dumps(body).encode()
