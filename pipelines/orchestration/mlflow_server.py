"""The MLflow tracking server of the production shape: ``mlflow server`` with MLflow's
basic-auth app, its store and auth database on PostgreSQL (or SQLite for a trial), and
artifacts proxied to S3 (``--artifacts-destination``), so clients need no S3 credentials and
every artifact read or write is authenticated.

Secrets (the admin password, the Flask secret key) come from files (mode 0600) and reach
the server through its environment only; they are never written into the auth ini nor
printed. The store's URL (which may hold a database password) goes through the environment
too (``MLFLOW_BACKEND_STORE_URI``), not the command line others can read in ``ps``; the auth
database's URL can only be given in the auth ini, which is 0600.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipelines.errors import ServiceUnavailableError
from pipelines.io import write_private

AUTH_FUNCTION = "mlflow.server.auth:authenticate_request_basic_auth"
ADMIN = "admin"


@dataclass(frozen=True)
class MlflowServer:
    """How to start one tracking server."""

    backend_store_uri: str  # postgresql+psycopg2://... or sqlite:///...
    auth_database_uri: str  # where the basic-auth app keeps users and permissions
    artifacts_destination: str  # s3://bucket/prefix (or file:///... for a trial)
    host: str
    port: int
    folder: Path  # the auth ini and the log live here
    s3_endpoint_url: str | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def write_auth_config(self) -> Path:
        """The basic-auth app's ini: READ for everyone by default; mode 0600, as the auth
        database's URL may hold a password (MLflow reads that URL only from here)."""
        path = self.folder / "mlflow-auth.ini"
        write_private(
            path,
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = {self.auth_database_uri}\n"
            f"admin_username = {ADMIN}\n"
            f"authorization_function = {AUTH_FUNCTION}\n",
        )
        return path

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth",
            "--artifacts-destination", self.artifacts_destination,
            "--host", self.host, "--port", str(self.port), "--workers", "1",
        ]  # fmt: skip

    def environment(self, admin_password: str, flask_secret: str) -> dict[str, str]:
        """The server's environment: the caller's, plus the auth settings and secrets."""
        if len(admin_password) < 12:
            raise ValueError("MLflow's basic-auth app needs an admin password of 12+ characters")
        env = {
            **os.environ,
            "MLFLOW_BACKEND_STORE_URI": self.backend_store_uri,  # not in argv: `ps` shows it
            "MLFLOW_AUTH_CONFIG_PATH": str(self.write_auth_config()),
            "MLFLOW_AUTH_ADMIN_PASSWORD": admin_password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": flask_secret,
        }
        if self.s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        return env


def wait_healthy(url: str, timeout: float = 120.0) -> None:
    """Until ``GET /health`` answers 200 (no credentials needed)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            r = httpx.get(f"{url.rstrip('/')}/health", timeout=2)
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}"
        except httpx.InvalidURL as exc:
            raise ServiceUnavailableError(f"MLflow at {url}: not a URL ({exc})") from exc
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise ServiceUnavailableError(f"MLflow at {url} not healthy after {timeout:.0f} s ({last})")
