"""Promotion to a local bucket and to S3 (moto's server on loopback): layout, checksums,
pointer-last ordering, idempotency, interrupted promotion, ledger, rollback."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from pipelines.errors import ShopMLError
from pipelines.evaluation.evaluate import EvaluateConfig, evaluate
from pipelines.evaluation.gate import Check, GateConfig
from pipelines.promotion.bucket import LocalBucket, open_bucket
from pipelines.promotion.promote import (
    LEDGER_FIELDS,
    Approval,
    ledger,
    promote,
    record_approval,
    rollback,
)
from pipelines.registry.models import MODEL_NAME
from pipelines.settings import Settings, load_settings
from tests.shops import TrainedShop, mlflow_client

# Every test here uses a trained model (the shared trained shop, or one of its own).
pytestmark = pytest.mark.slow

PERMISSIVE = EvaluateConfig(gate=GateConfig([Check("hit_rate@10", min=0.0)]))


class Models:
    """Two evaluated versions of the shared trained shop (strong, then weak)."""

    def __init__(self, trained: TrainedShop, root: Path) -> None:
        self.root = root
        self.settings = load_settings({"SHOPML_HOME": str(root / "home")})
        self.v1, self.v2 = (trained.register(self.settings, weak=w).version for w in (False, True))
        for version in (self.v1, self.v2):
            evaluate(
                model_uri=f"models:/{MODEL_NAME}/{version}",
                snapshot_uri=trained.snapshot,
                settings=self.settings,
                cfg=PERMISSIVE,
                use_champion=False,
            )

    def settings_with(self, bucket_uri: str, endpoint: str | None = None) -> Settings:
        return replace(self.settings, serving_bucket_uri=bucket_uri, s3_endpoint_url=endpoint)


@pytest.fixture(scope="module")
def models(trained_shop: TrainedShop, tmp_path_factory: pytest.TempPathFactory) -> Models:
    return Models(trained_shop, tmp_path_factory.mktemp("promote"))


def _champion(settings: Settings) -> int | None:
    try:
        return int(
            mlflow_client(settings).get_model_version_by_alias(MODEL_NAME, "champion").version
        )
    except Exception:
        return None


def _check_layout(bucket: Any, version: int, settings: Settings) -> dict[str, Any]:
    keys = bucket.keys(f"{MODEL_NAME}/versions/{version}")
    base = f"{MODEL_NAME}/versions/{version}/"
    rel = {k.removeprefix(base) for k in keys}
    assert {
        "manifest.json",
        "feature_service.json",
        "features/users.parquet",
        "features/items.parquet",
        "report/verdict.json",
        "report/report.html",
        "report/summary.md",
        "bundle/recommender.json",
        "bundle/ranker.txt",
    } <= rel
    manifest = json.loads(bucket.get(base + "manifest.json"))
    assert set(manifest["files"]) == rel - {"manifest.json"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(bucket.get(base + name)).hexdigest() == digest, name
    tags = mlflow_client(settings).get_model_version(MODEL_NAME, str(version)).tags
    assert manifest["verdict_sha256"] == tags["eval.verdict_sha256"]
    assert (
        hashlib.sha256(bucket.get(base + "report/verdict.json")).hexdigest()
        == tags["eval.verdict_sha256"]
    )
    return manifest


def test_refuses_without_a_blessed_verdict_and_an_approval(models: Models, tmp_path: Path) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    with pytest.raises(ShopMLError, match="has no recorded approval"):
        promote(version=models.v1, settings=settings)
    client = mlflow_client(settings)
    client.set_model_version_tag(MODEL_NAME, str(models.v1), "eval.blessed", "false")
    try:
        with pytest.raises(ShopMLError, match="was not blessed"):
            promote(version=models.v1, settings=settings)
    finally:
        client.set_model_version_tag(MODEL_NAME, str(models.v1), "eval.blessed", "true")
    assert not (tmp_path / "bucket").exists()


def test_promote_local_then_idempotent_interrupted_and_rollback(
    models: Models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = models.settings_with((tmp_path / "bucket").as_uri())
    bucket = open_bucket(settings.serving_bucket_uri)
    for v, who in ((models.v1, "reviewer"), (models.v2, "alice")):
        record_approval(
            MODEL_NAME, v, Approval(approved_by=who, dag_run=f"run-{v}", comment="ok"), settings
        )
    first = promote(version=models.v1, settings=settings, dag_run="run-1")
    assert first.changed and first.previous is None
    manifest = _check_layout(bucket, models.v1, settings)
    current = json.loads(bucket.get(f"{MODEL_NAME}/current.json"))
    assert current["version"] == models.v1
    assert _champion(settings) == models.v1
    (line,) = ledger(settings, MODEL_NAME)
    assert line["action"] == "promote" and line["version"] == models.v1
    assert line["approved_by"] == "reviewer" and line["dag_run"] == "run-1"
    assert line["previous_version"] is None
    assert line["snapshot_id"] == manifest["snapshot_id"] != ""
    assert line["report_sha256"] == manifest["files"]["report/report.html"]

    # a retried promotion of the served version changes nothing
    before = bucket.get(f"{MODEL_NAME}/current.json")
    again = promote(version=models.v1, settings=settings, dag_run="run-1")
    assert not again.changed
    assert bucket.get(f"{MODEL_NAME}/current.json") == before
    assert len(ledger(settings, MODEL_NAME)) == 1

    # interrupted after some files of v2: no manifest, the pointer still on v1
    real_put = LocalBucket.put
    calls = {"n": 0}

    def failing_put(self: LocalBucket, key: str, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError("disk full (simulated)")
        real_put(self, key, data)

    monkeypatch.setattr(LocalBucket, "put", failing_put)
    with pytest.raises(OSError, match="simulated"):
        promote(version=models.v2, settings=settings)
    monkeypatch.setattr(LocalBucket, "put", real_put)
    assert bucket.get(f"{MODEL_NAME}/versions/{models.v2}/manifest.json") is None
    assert json.loads(bucket.get(f"{MODEL_NAME}/current.json"))["version"] == models.v1
    assert _champion(settings) == models.v1
    assert len(ledger(settings, MODEL_NAME)) == 1
    # the retry completes it
    second = promote(version=models.v2, settings=settings)
    assert second.changed and second.previous == models.v1
    _check_layout(bucket, models.v2, settings)
    assert json.loads(bucket.get(f"{MODEL_NAME}/current.json"))["version"] == models.v2
    assert _champion(settings) == models.v2
    assert [e["version"] for e in ledger(settings, MODEL_NAME)] == [models.v1, models.v2]
    assert all(set(e) <= set(LEDGER_FIELDS) for e in ledger(settings, MODEL_NAME))

    # rollback re-points serving and the alias, and is recorded
    back = rollback(
        to_version=models.v1, reason="CTR dropped", settings=settings, requested_by="bob"
    )
    assert back.previous == models.v2
    assert json.loads(bucket.get(f"{MODEL_NAME}/current.json"))["version"] == models.v1
    assert _champion(settings) == models.v1
    last = ledger(settings, MODEL_NAME)[-1]
    assert (last["action"], last["version"], last["previous_version"]) == (
        "rollback",
        models.v1,
        models.v2,
    )
    assert (last["reason"], last["approved_by"]) == ("CTR dropped", "bob")
    with pytest.raises(ShopMLError, match="already the served version"):
        rollback(to_version=models.v1, reason="again", settings=settings, requested_by="bob")
    with pytest.raises(ShopMLError, match="not a complete promoted version"):
        rollback(to_version=99, reason="typo", settings=settings, requested_by="bob")
    # a tampered version cannot be served again
    bucket.put(f"{MODEL_NAME}/versions/{models.v2}/feature_service.json", b"{}")
    with pytest.raises(ShopMLError, match="not a complete promoted version"):
        rollback(to_version=models.v2, reason="x", settings=settings, requested_by="bob")
    assert len(ledger(settings, MODEL_NAME)) == 3


def test_promote_to_s3_served_by_moto(models: Models, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3
    from moto.server import ThreadedMotoServer

    for key, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="serving")
        settings = models.settings_with("s3://serving/shopml", endpoint)
        record_approval(MODEL_NAME, models.v2, Approval(approved_by="alice"), settings)
        out = promote(version=models.v2, settings=settings)
        assert out.changed
        bucket = open_bucket(settings.serving_bucket_uri, endpoint)
        _check_layout(bucket, models.v2, settings)
        raw = (
            boto3.client("s3", endpoint_url=endpoint)
            .get_object(Bucket="serving", Key=f"shopml/{MODEL_NAME}/current.json")["Body"]
            .read()
        )
        assert json.loads(raw)["version"] == models.v2
        assert not promote(version=models.v2, settings=settings).changed
        assert [e["approved_by"] for e in ledger(settings, MODEL_NAME)] == ["alice"]
    finally:
        server.stop()
