"""The `shopml` command line: commands listed, work done, errors as messages."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app
from pipelines.data.snapshot import Snapshot
from tests.conftest import REPO

runner = CliRunner()


def test_help_lists_every_command() -> None:
    top = runner.invoke(app, ["--help"]).output
    assert "config" in top and "data" in top
    data = runner.invoke(app, ["data", "--help"]).output
    for cmd in ("generate", "import", "describe"):
        assert cmd in data
    imports = runner.invoke(app, ["data", "import", "--help"]).output
    for cmd in ("movielens-100k", "csv", "judgments"):
        assert cmd in imports


def test_generate_then_describe(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    r = runner.invoke(
        app,
        [
            "data",
            "generate",
            "--out",
            str(out),
            "--users",
            "300",
            "--items",
            "150",
            "--events",
            "5000",
            "--seed",
            "3",
        ],
    )
    assert r.exit_code == 0, r.output
    snap = Snapshot.open(out)
    assert snap.rows("events") == 5_000
    assert snap.id[:12] in r.output
    d = runner.invoke(app, ["data", "describe", str(out), "--json"])
    assert d.exit_code == 0
    assert json.loads(d.output)["events"]["total"] == 5_000


def test_default_output_goes_under_shopml_home(_isolated_home: Path) -> None:
    r = runner.invoke(
        app, ["data", "generate", "--users", "200", "--items", "120", "--events", "2000"]
    )
    assert r.exit_code == 0, r.output
    assert Snapshot.open(_isolated_home / "snapshots" / "generated-seed42").rows("events") == 2_000


def test_user_errors_are_messages_with_exit_code_2(tmp_path: Path) -> None:
    r = runner.invoke(app, ["data", "generate", "--out", str(tmp_path / "x"), "--items", "10"])
    assert r.exit_code == 2
    assert "error: --items must be at least 93" in r.output
    r = runner.invoke(app, ["data", "describe", str(tmp_path / "missing")])
    assert r.exit_code == 2 and "does not exist" in r.output


def test_console_script_is_installed_and_errors_without_traceback(tmp_path: Path) -> None:
    shopml = REPO / ".venv" / "bin" / "shopml"
    ok = subprocess.run([str(shopml), "--version"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("shopml ")
    bad = subprocess.run(
        [str(shopml), "data", "describe", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_validate_build_materialize_get(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    shop = Path("shop")  # relative, as `make demo` passes it
    steps = [
        [
            "data",
            "generate",
            "--out",
            str(shop),
            "--users",
            "300",
            "--items",
            "120",
            "--events",
            "6000",
            "--days",
            "20",
        ],
        ["validate", str(shop)],
        ["features", "build", str(shop), "--history-days", "3"],
        ["features", "materialize"],
    ]
    for args in steps:
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    assert "built features" in r.output or "materialized" in r.output
    got = runner.invoke(app, ["features", "get", "user", "u001"])
    assert got.exit_code == 0
    assert "user_profile" in got.output and "events_total" in got.output
    nobody = runner.invoke(app, ["features", "get", "user", "no-such-user"])
    assert nobody.exit_code == 2 and "no values for user 'no-such-user'" in nobody.output
    unknown = runner.invoke(app, ["features", "get", "shop", "x"])
    assert unknown.exit_code == 2 and "entity must be 'user' or 'item'" in unknown.output


def test_features_build_needs_a_validated_snapshot(tmp_path: Path) -> None:
    shop = tmp_path / "shop"
    runner.invoke(
        app,
        [
            "data",
            "generate",
            "--out",
            str(shop),
            "--users",
            "200",
            "--items",
            "120",
            "--events",
            "2000",
        ],
    )
    r = runner.invoke(app, ["features", "build", str(shop)])
    assert r.exit_code == 2
    assert "has not been validated; run `shopml validate" in " ".join(r.output.split())


def test_features_get_before_any_build_is_a_message() -> None:
    r = runner.invoke(app, ["features", "get", "user", "u1"])
    assert r.exit_code == 2
    assert "no feature build in" in " ".join(r.output.split())
