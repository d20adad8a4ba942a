"""The promoter account's credentials: read from a 0600 file (or the environment) only for
the block that promotes, and a refused registry write named as such."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from pipelines.errors import ShopMLError
from pipelines.promotion.promote import _write
from pipelines.registry.accounts import init_accounts
from pipelines.registry.tracking import as_promoter
from pipelines.settings import Settings, load_settings


def _enter(settings: Settings) -> None:
    with as_promoter(settings):
        pass


def test_the_promoter_password_is_used_only_inside_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "promoter.json"
    settings = load_settings({"SHOPML_HOME": str(tmp_path), "SHOPML_MLFLOW_PROMOTER_PASSWORD_FILE": str(secret)})  # fmt: skip
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "shopml-pipeline")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pipeline-pass")
    with as_promoter(settings) as user:  # nothing configured: the process's own login
        assert user is None and os.environ["MLFLOW_TRACKING_USERNAME"] == "shopml-pipeline"
    secret.write_text(json.dumps({"shopml-promoter": "promoter-pass"}))
    secret.chmod(0o640)
    with pytest.raises(ShopMLError, match="is mode 640; only its owner may read it"):
        _enter(settings)
    secret.chmod(0o600)
    with as_promoter(settings) as user:
        assert user == "shopml-promoter"
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "shopml-promoter"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "promoter-pass"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "shopml-pipeline"  # restored
    assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "pipeline-pass"
    secret.write_text(json.dumps({"someone-else": "x"}))
    with pytest.raises(ShopMLError, match="holds no password for the MLflow account 'shopml-pro"):
        _enter(settings)
    monkeypatch.setenv("SHOPML_MLFLOW_PROMOTER_PASSWORD", "from-env")  # wins over the file
    with as_promoter(settings):
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "from-env"


def test_a_refused_registry_write_names_the_account(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.exceptions import MlflowException

    def refused(*_: object) -> None:
        raise MlflowException(
            "PERMISSION_DENIED: Permission denied", error_code="PERMISSION_DENIED"
        )

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "erin")
    with pytest.raises(ShopMLError, match="MLflow refused erin the registry write"):
        _write(refused, "shopml-recommender", "champion", "1")

    def other(*_: object) -> None:
        raise MlflowException("RESOURCE_DOES_NOT_EXIST: no such model")

    with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
        _write(other)


def test_accounts_need_a_tracking_server(tmp_path: Path) -> None:
    settings = load_settings({"SHOPML_HOME": str(tmp_path)})
    with pytest.raises(ShopMLError, match="MLflow accounts need a tracking server"):
        init_accounts(settings, {})
