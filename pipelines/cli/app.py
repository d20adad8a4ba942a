"""The root ``shopml`` app, its consoles and the helpers every command group shares.

Commands are thin: parse options, call a step, print. Errors a user can cause (bad
input, bad settings) print one message and exit with code 2; they never show a traceback.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.core import TyperOption

from pipelines import __version__
from pipelines.errors import ShopMLError
from pipelines.io import write_json
from pipelines.settings import load_settings


def _flag_type(self: TyperOption, ctx: Any) -> str | None:
    """No type column for a flag (typer 0.29 prints ``<bool>`` beside every flag, --help
    included, as if it took a value)."""
    return None if self.is_flag else _OPTION_TYPE(self, ctx)


_OPTION_TYPE = TyperOption.display_type_rich
TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

app = typer.Typer(
    help="ShopML: Airflow-orchestrated search and recommendation for shops.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

out_console = Console()
err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Turn :class:`ShopMLError` into one red line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ShopMLError as exc:
            print_error(str(exc))
            raise typer.Exit(code=2) from None
        except OSError as exc:  # disk full, permissions, a path that is a file, ...
            where = f": {exc.filename}" if exc.filename else ""
            print_error(f"{exc.strerror or exc}{where}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"shopml {__version__}")
        raise typer.Exit()


class NoInterruptTracebacks(logging.Filter):
    """Ctrl-C or SIGTERM unwinds through libraries, and some log the interrupt with its
    traceback on the way (a database connection given back mid-query). The user asked for
    the stop: the line stays, the traceback goes."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt | SystemExit):
            record.exc_info, record.exc_text = None, None
        return True


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug log lines.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
    handler.addFilter(NoInterruptTracebacks())
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    for noisy in ("great_expectations", "feast", "alembic", "urllib3", "botocore", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def default_out(name: str) -> Path:
    return load_settings().snapshots_dir / name


def print_snapshot(
    kind: str, path: Path, snapshot_id: str, rows: dict[str, int], notes: tuple[str, ...] = ()
) -> None:
    out_console.print(f"[bold green]{kind}[/] snapshot [bold]{snapshot_id[:12]}[/] at {path}")
    out_console.print("  " + ", ".join(f"{n}: {r:,}" for n, r in rows.items()))
    for note in notes:
        out_console.print(f"  note: {note}", highlight=False)


def write_results(doc: dict[str, Any], out: Path | None) -> None:
    """A benchmark's results document as JSON at ``out`` (when given)."""
    if out is not None:
        write_json(out, doc)
        out_console.print(f"results written to {out}")


UserOption = Annotated[
    str,
    typer.Option(
        "--user", envvar="SHOPML_AIRFLOW_USER", help="Airflow login (env SHOPML_AIRFLOW_USER)."
    ),
]


def utc_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time as people write it (``2017-11-01``, ``2017-11-01T06:00``,
    ``2017-11-01T00:00:00Z``, ``...+05:30``) as UTC; a naive one is UTC."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ShopMLError(
            f"{option} {value!r}: not an ISO 8601 time, e.g. 2017-11-01 or 2017-11-01T00:00:00Z"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
