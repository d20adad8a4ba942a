"""``shopml serve``: the serving API; ``shopml serve keys``: its API keys."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.app import app, err_console, out_console, reports_errors
from pipelines.settings import load_settings

serve_app = typer.Typer(
    help="Run the serving API (recommendations, search, similar items, events) over the "
    "serving bucket; manage its keys.",
    invoke_without_command=True,
    no_args_is_help=False,
)
keys_app = typer.Typer(help="API keys of the serving API (stored hashed).", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
serve_app.add_typer(keys_app, name="keys")


@serve_app.callback()
@reports_errors
def serve_cmd(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
) -> None:
    """Serve the promoted models of the serving bucket (docs/serving.md). The embedded
    profile makes a client and an admin key on first start and prints where they are."""
    if ctx.invoked_subcommand is not None:
        return
    from serving.keys import KeyRing, ensure_default_keys
    from serving.main import run, urls

    settings = load_settings()
    made = ensure_default_keys(settings)
    if not len(KeyRing.load(settings)):
        from pipelines.errors import ConfigError

        raise ConfigError(
            "no serving API keys: add one with `shopml serve keys add --name NAME` "
            "(or set SHOPML_SERVING_API_KEYS)"
        )
    for scope, path in made.items():
        err_console.print(f"created the {scope} API key in {path} (mode 0600)")
    u = urls(host, port)
    err_console.print(
        f"serving {settings.serving_bucket_uri} at {u['api']} ({workers} worker(s)); "
        f"API docs {u['docs']}, preview {u['preview']}"
    )
    run(settings, host=host, port=port, workers=workers)


@keys_app.command("add")
@reports_errors
def keys_add_cmd(
    name: Annotated[str, typer.Option(help="Who uses the key (logged with each request).")],
    scope: Annotated[
        str, typer.Option(help="client (the /v1 API) or admin (also /admin and /preview).")
    ] = "client",
) -> None:
    """Make a key; it is printed once and stored only as its SHA-256."""
    from serving.keys import SCOPES, add_key

    if scope not in SCOPES:
        from pipelines.errors import ConfigError

        raise ConfigError(f"--scope {scope!r}: use one of {', '.join(SCOPES)}")
    settings = load_settings()
    key = add_key(settings.serving_keys_file, name, scope)
    err_console.print(
        f"added {scope} key {name!r} to {settings.serving_keys_file}; it is shown once:"
    )
    out_console.print(key, highlight=False, soft_wrap=True)


@keys_app.command("list")
@reports_errors
def keys_list_cmd() -> None:
    """The keys the service accepts (names and scopes; never a key)."""
    from serving.keys import KeyRing, read_keys_file

    settings = load_settings()
    table = Table("name", "scope", "from")
    from_file = {k.name for k in read_keys_file(settings.serving_keys_file)}
    for k in KeyRing.load(settings).keys:
        table.add_row(k.name, k.scope, "keys file" if k.name in from_file else "settings")
    out_console.print(table)


@keys_app.command("revoke")
@reports_errors
def keys_revoke_cmd(name: Annotated[str, typer.Option(help="The key's name.")]) -> None:
    """Remove a key from the keys file; a running service refuses it within a second."""
    from serving.keys import revoke_key

    settings = load_settings()
    revoke_key(settings.serving_keys_file, name)
    err_console.print(f"revoked key {name!r}")
