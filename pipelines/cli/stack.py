"""``shopml stack``: the production shape on this machine (Airflow with Celery workers on
PostgreSQL and Redis, MLflow with basic auth, S3, the serving API). The embedded stack is
``make up`` / ``make down``."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import app, out_console, reports_errors
from pipelines.errors import ConfigError
from pipelines.settings import load_settings

if TYPE_CHECKING:
    from pipelines.orchestration.production import Layout

stack_app = typer.Typer(
    help="Start, stop and check the production shape on this machine (docs: infra/README.md).",
    no_args_is_help=True,
)
app.add_typer(stack_app, name="stack")


class Profile(StrEnum):
    production = "production"
    embedded = "embedded"


ProfileOption = Annotated[
    Profile,
    typer.Option(
        "--profile",
        help="production (needs SHOPML_ENV=production and its settings); the embedded stack "
        "is `make up`.",
        case_sensitive=False,
    ),
]
ReviewersOption = Annotated[
    str,
    typer.Option(
        "--reviewers",
        envvar="SHOPML_REVIEWERS",
        help="Airflow logins that approve (comma-separated).",
    ),
]


def _layout(profile: Profile, serving_port: int = 8000) -> Layout:
    from pipelines.orchestration.production import Layout

    if profile is not Profile.production:
        raise ConfigError(
            "`shopml stack` runs the production profile; the embedded stack is `make up`"
        )
    return Layout.of(load_settings(), serving_port)


@stack_app.command("init")
@reports_errors
def init_cmd(
    profile: ProfileOption = Profile.production, reviewers: ReviewersOption = "reviewer"
) -> None:
    """Create databases, buckets, secrets, serving keys and logins; keep what exists.

    Secrets are written 0600 and never printed."""
    from pipelines.orchestration.production import init
    from serving.keys import generate_keys

    layout = _layout(profile)
    made = init(layout, reviewers, generate_keys)
    out_console.print(f"databases created: {', '.join(made['databases']) or 'none (all exist)'}")
    out_console.print(f"buckets created: {', '.join(made['buckets']) or 'none (all exist)'}")
    for scope, path in made["serving_keys"].items():
        out_console.print(f"serving API {scope} key written to {escape(path)}")
    out_console.print(f"secrets: {escape(str(layout.secrets_file))} (0600)")


@stack_app.command("accounts")
@reports_errors
def accounts_cmd(
    passwords: Annotated[
        Path,
        typer.Option(
            "--passwords",
            help="0600 JSON file of login: password; holds shopml-pipeline's, receives "
            "generated ones for new engineers.",
        ),
    ],
    engineers: Annotated[
        list[str] | None,
        typer.Option("--engineer", metavar="LOGIN", help="An engineer's login (repeat for more)."),
    ] = None,
) -> None:
    """Create ShopML's MLflow accounts, models and grants on a running tracking server.

    For a server `shopml stack up` did not start (docker compose, a cluster); `up` does it itself.

    As MLflow's admin (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD), at SHOPML_MLFLOW_TRACKING_URI.

    The promoter's password comes from the file, else from where promotion reads it. What exists is kept (an existing account keeps its password); passwords are never printed."""
    from pipelines.orchestration.mlflow_server import wait_healthy
    from pipelines.registry.accounts import accounts_from_file

    settings = load_settings()
    grants, generated = accounts_from_file(
        settings,
        passwords,
        engineers or [],
        ready=lambda: wait_healthy(settings.mlflow_tracking_uri, timeout=30),
    )
    created = ", ".join(escape(u) for u in grants.users_created) or "none (all exist)"
    models = ", ".join(escape(m) for m in grants.models_created) or "none (all exist)"
    out_console.print(f"accounts created: {created}")
    out_console.print(f"models created: {models}")
    out_console.print(f"grants set: {len(grants.granted)}")
    if generated:
        names = ", ".join(escape(g) for g in generated)
        out_console.print(f"passwords of {names} written to {escape(str(passwords))} (0600)")


@stack_app.command("up")
@reports_errors
def up_cmd(
    profile: ProfileOption = Profile.production,
    workers: Annotated[int, typer.Option("--workers", min=1, max=8, help="Celery workers.")] = 2,
    serving_port: Annotated[
        int, typer.Option("--serving-port", help="The serving API's port.")
    ] = 8000,
    reviewers: ReviewersOption = "reviewer",
) -> None:
    """Init, then start MLflow, Airflow, the Celery workers and the serving API.

    Each component runs in its own process group; Airflow is the API server, scheduler,
    DAG processor and triggerer with the CeleryExecutor."""
    from pipelines.orchestration.production import up
    from serving.keys import generate_keys

    layout = _layout(profile, serving_port)
    out_console.print(f"starting the production stack ({workers} Celery workers)...")
    info = up(layout, generate_keys, workers=workers, reviewers=reviewers)
    for name, url in info["urls"].items():
        out_console.print(f"{name}: {url}")
    out_console.print(
        f"Airflow passwords: {escape(str(layout.settings.airflow_home / 'passwords.json'))}; "
        f"logs: {escape(str(layout.folder / 'logs'))}; `shopml stack down` stops it"
    )


@stack_app.command("down")
@reports_errors
def down_cmd(profile: ProfileOption = Profile.production) -> None:
    """Stop every component `shopml stack up` started."""
    from pipelines.orchestration.production import down

    stopped = down(_layout(profile))
    out_console.print(f"stopped: {', '.join(stopped) or 'nothing was running'}")


@stack_app.command("status")
@reports_errors
def status_cmd(profile: ProfileOption = Profile.production) -> None:
    """Each component: running, and healthy by its health endpoint or Airflow's heartbeats.

    Exit code 1 when one is down or unhealthy."""
    from pipelines.orchestration.production import status

    found = status(_layout(profile))
    if not found:
        out_console.print("no production stack is running for this home")
        raise typer.Exit(code=1)
    table = Table("component", "running", "healthy", "detail", box=None)
    for h in found:
        healthy = "-" if h.healthy is None else ("yes" if h.healthy else "NO")
        table.add_row(h.component, "yes" if h.running else "NO", healthy, escape(h.detail))
    out_console.print(table)
    if not all(h.running and h.healthy is not False for h in found):
        raise typer.Exit(code=1)
