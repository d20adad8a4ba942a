"""The embedded MLflow store: a copied or moved SHOPML_HOME keeps working on its own files,
and the store is private to its owner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.registry.models import MODEL_NAME, load_recommender
from pipelines.settings import load_settings
from tests.shops import TrainedShop, mlflow_client

pytestmark = pytest.mark.slow


def test_a_copied_home_writes_and_reads_its_own_artifacts(
    trained_shop: TrainedShop, tmp_path: Path
) -> None:
    original = load_settings({"SHOPML_HOME": str(tmp_path / "original")})
    trained_shop.register(original)
    copy_home = tmp_path / "copy"
    shutil.copytree(tmp_path / "original", copy_home)
    copied = load_settings({"SHOPML_HOME": str(copy_home)})
    second = trained_shop.register(copied, weak=True)
    client = mlflow_client(copied)
    for mv in client.search_model_versions(f"name='{MODEL_NAME}'"):
        artifact_uri = client.get_run(mv.run_id).info.artifact_uri
        assert artifact_uri.startswith((copy_home / "mlflow" / "artifacts").as_uri()), artifact_uri
    assert second.version == 2
    # the original home never saw the copy's second version
    assert not any((tmp_path / "original").rglob(f"*{second.run_id}*"))
    default = client.get_experiment("0").artifact_location
    assert default.startswith((copy_home / "mlflow" / "artifacts").as_uri()), default
    # with the original gone, the copy still loads both versions from its own files
    shutil.rmtree(tmp_path / "original")
    for version in (1, 2):
        assert load_recommender(f"models:/{MODEL_NAME}/{version}", copied).booster is not None
    db = copy_home / "mlflow" / "mlflow.db"
    assert db.stat().st_mode & 0o077 == 0, "the tracking database is private"
