"""``shopml serve keys``: keys shown once and stored as digests; the embedded profile's
generated keys; bad key settings named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.errors import ConfigError
from pipelines.settings import load_settings
from serving.keys import KeyRing, digest, ensure_default_keys

runner = CliRunner()
ENV = {"COLUMNS": "200"}


def test_add_list_revoke(tmp_path: Path) -> None:
    env = {**ENV, "SHOPML_HOME": str(tmp_path)}
    res = runner.invoke(app, ["serve", "keys", "add", "--name", "shop-front"], env=env)
    assert res.exit_code == 0, res.output
    key = res.stdout.strip().splitlines()[-1]
    assert key.startswith("smk_") and len(key) > 40
    stored = (tmp_path / "secrets" / "serving-keys.json").read_text()
    assert key not in stored and digest(key) in stored
    assert json.loads(stored)["keys"][0]["scope"] == "client"
    res = runner.invoke(app, ["serve", "keys", "add", "--name", "shop-front"], env=env)
    assert res.exit_code == 2 and "exists" in res.output
    res = runner.invoke(app, ["serve", "keys", "add", "--name", "x", "--scope", "root"], env=env)
    assert res.exit_code == 2 and "--scope 'root'" in res.output
    listed = runner.invoke(app, ["serve", "keys", "list"], env=env)
    assert "shop-front" in listed.output and "client" in listed.output and key not in listed.output
    assert (
        runner.invoke(app, ["serve", "keys", "revoke", "--name", "shop-front"], env=env).exit_code
        == 0
    )
    assert KeyRing.load(load_settings({"SHOPML_HOME": str(tmp_path)})).find(key) is None


def test_embedded_keys_are_generated_once_production_never(tmp_path: Path) -> None:
    settings = load_settings({"SHOPML_HOME": str(tmp_path)})
    made = ensure_default_keys(settings)
    assert set(made) == {"client", "admin"}
    ring = KeyRing.load(settings)
    client = made["client"].read_text().strip()
    assert ring.find(client).scope == "client"  # type: ignore[union-attr]
    assert made["admin"].stat().st_mode & 0o777 == 0o600
    assert ensure_default_keys(settings) == {}  # keys exist: nothing new
    prod = load_settings(
        {"SHOPML_HOME": str(tmp_path / "p"), "SHOPML_ENV": "production",
         "SHOPML_MLFLOW_TRACKING_URI": "http://m", "SHOPML_SERVING_BUCKET_URI": "s3://b/p",
         "SHOPML_WORK_URI": "s3://b/w"}
    )  # fmt: skip
    assert ensure_default_keys(prod) == {}
    res = runner.invoke(
        app, ["serve", "--port", "1"],
        env={**ENV, "SHOPML_HOME": str(tmp_path / "p"), "SHOPML_ENV": "production",
             "SHOPML_MLFLOW_TRACKING_URI": "http://m", "SHOPML_SERVING_BUCKET_URI": "s3://b/p",
             "SHOPML_WORK_URI": "s3://b/w"},
    )  # fmt: skip
    assert res.exit_code == 2 and "no serving API keys" in res.output


def test_keys_from_settings_and_their_errors(tmp_path: Path) -> None:
    good = f"ops:admin:{digest('smk_secret')}"
    settings = load_settings({"SHOPML_HOME": str(tmp_path), "SHOPML_SERVING_API_KEYS": good})
    assert KeyRing.load(settings).find("smk_secret").name == "ops"  # type: ignore[union-attr]
    for bad, message in (
        ("ops:admin", "name:scope:sha256"),
        (f"ops:root:{digest('x')}", "scope 'root'"),
        ("ops:admin:abc", "not a SHA-256"),
        (f"{good},{good}", "appear twice"),
    ):
        s = load_settings({"SHOPML_HOME": str(tmp_path), "SHOPML_SERVING_API_KEYS": bad})
        with pytest.raises(ConfigError, match=message):
            KeyRing.load(s)
    keys_file = tmp_path / "secrets" / "serving-keys.json"
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    keys_file.write_text('{"keys": []}')
    keys_file.chmod(0o666)
    with pytest.raises(ConfigError, match="writable by other users"):
        KeyRing.load(load_settings({"SHOPML_HOME": str(tmp_path)}))
