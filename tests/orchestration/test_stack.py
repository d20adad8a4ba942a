"""The embedded stack's logins: each gets the least role it needs, never admin by default."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pipelines.orchestration.stack import _passwords, environment, roles
from pipelines.settings import load_settings


def test_each_login_gets_the_least_role_it_needs() -> None:
    assert roles("reviewer, alice") == {
        "admin": "admin",
        "engineer": "op",
        "shopml-service": "viewer",
        "reviewer": "user",
        "alice": "user",
    }
    assert roles("engineer")["engineer"] == "op"  # a login named twice keeps the higher role
    env = environment(load_settings(), 8090, "reviewer")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == (
        "admin:admin,engineer:op,shopml-service:viewer,reviewer:user"
    )
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS"] == "False"
    assert env["SHOPML_REVIEWERS"] == "reviewer"


def test_passwords_are_private_from_the_first_byte(tmp_path: Path) -> None:
    first = _passwords(tmp_path, ["admin", "engineer"])
    assert (tmp_path / "passwords.json").stat().st_mode & 0o777 == 0o600
    again = _passwords(tmp_path, ["admin", "engineer", "bob"])
    assert {k: again[k] for k in first} == first and len(again["bob"]) >= 16
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_an_airflow_writer_waits_out_another_writer_past_sqlites_five_seconds(
    tmp_path: Path,
) -> None:
    """A busy machine kept the embedded database locked past sqlite3's 5 s, and the API
    server answered 500 to an approval; every component now waits up to a minute."""
    db = tmp_path / "airflow.db"
    env = environment(load_settings(), 8090, "reviewer")
    env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{db}"
    env["AIRFLOW_HOME"] = str(tmp_path)
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("CREATE TABLE held (x)")
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from airflow import settings\n"
            "from sqlalchemy import text\n"
            "print('ready', flush=True)\n"
            "with settings.engine.begin() as c:\n"
            "    c.execute(text('CREATE TABLE written (x)'))\n",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
    time.sleep(8)  # past sqlite3's own 5 s: the writer still waits
    assert writer.poll() is None, writer.communicate()
    holder.execute("COMMIT")
    holder.close()
    _out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err[-2000:]
    tables = {r[0] for r in sqlite3.connect(db).execute("SELECT name FROM sqlite_master")}
    assert {"held", "written"} <= tables
