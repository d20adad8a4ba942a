"""The serving bucket's layout: one module that promotion writes and serving reads.

Under the serving bucket URI (``file:///...`` or ``s3://bucket/prefix``)::

    <model>/versions/<version>/bundle/...              the model bundle
    <model>/versions/<version>/feature_service.json    the features the ranker reads
    <model>/versions/<version>/features/users.parquet  the feature values the bundle serves with
    <model>/versions/<version>/features/items.parquet
    <model>/versions/<version>/report/...              verdict.json, report.html, summary.md
    <model>/versions/<version>/manifest.json           sha256 of every file: written last
    <model>/current.json                               the served version: written after the manifest
    <model>/ledger.jsonl                               one JSON line per promotion or rollback

A version is complete when its manifest exists and every file it lists matches its
sha256; ``current.json`` only ever points at a complete version.
"""

from __future__ import annotations

import json
from typing import Any

from pipelines.io import dumps, sha256_bytes, sha256_json
from pipelines.promotion.bucket import Bucket

MANIFEST = "manifest.json"
POINTER = "current.json"
LEDGER = "ledger.jsonl"
BUNDLE = "bundle"
FEATURES = "features"
REPORT = "report"
FEATURE_SERVICE = "feature_service.json"
REPORT_FILES = ("verdict.json", "report.html", "summary.md")


def version_prefix(model: str, version: int) -> str:
    return f"{model}/versions/{version}"


def version_key(model: str, version: int, rel: str) -> str:
    """The key of the file ``rel`` (e.g. ``bundle/ranker.txt``) of one version."""
    return f"{version_prefix(model, version)}/{rel}"


def pointer_key(model: str) -> str:
    return f"{model}/{POINTER}"


def ledger_key(model: str) -> str:
    return f"{model}/{LEDGER}"


def read_pointer(bucket: Bucket, model: str) -> dict[str, Any] | None:
    """``current.json`` of ``model`` (None before the first promotion)."""
    raw = bucket.get(pointer_key(model))
    return None if raw is None else dict(json.loads(raw))


def read_manifest(bucket: Bucket, model: str, version: int) -> dict[str, Any] | None:
    raw = bucket.get(version_key(model, version, MANIFEST))
    return None if raw is None else dict(json.loads(raw))


def verify_version(bucket: Bucket, model: str, version: int) -> dict[str, Any] | None:
    """The version's manifest when it and every file it lists are intact, else None."""
    manifest = read_manifest(bucket, model, version)
    if manifest is None:
        return None
    for rel, digest in manifest["files"].items():
        data = bucket.get(version_key(model, version, rel))
        if data is None or sha256_bytes(data) != digest:
            return None
    return manifest


def manifest_body(
    model: str, version: int, files: dict[str, str], meta: dict[str, Any], created_at: str
) -> bytes:
    """The manifest of a version: ``files`` (relative path -> sha256) and ``meta``."""
    body = {"model": model, "version": version, **meta, "files": files, "created_at": created_at}
    return dumps(body, sort_keys=True).encode()


def pointer_body(
    model: str, version: int, previous: int | None, manifest: dict[str, Any], updated_at: str
) -> bytes:
    """``current.json``: the served version, the one before, and its manifest's digest."""
    body = {
        "model": model,
        "version": version,
        "previous_version": previous,
        "manifest_sha256": sha256_json(manifest),
        "updated_at": updated_at,
    }
    return dumps(body).encode()


def read_ledger(bucket: Bucket, model: str) -> list[dict[str, Any]]:
    """Every line of the model's ledger, oldest first."""
    raw = bucket.get(ledger_key(model)) or b""
    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
