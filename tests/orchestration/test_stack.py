"""The embedded stack's logins: each gets the least role it needs, never admin by default."""

from __future__ import annotations

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
