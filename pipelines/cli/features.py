"""``shopml features ...``: build, materialize and read the feature store."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import (
    app,
    out_console,
    reports_errors,
    utc_time,
)
from pipelines.errors import ShopMLError
from pipelines.settings import load_settings

features_app = typer.Typer(
    help="Build, materialize and read the feature store.", no_args_is_help=True
)
app.add_typer(features_app, name="features")


@features_app.command("build")
@reports_errors
def features_build_cmd(
    snapshot: Annotated[Path, typer.Argument(help="A validated (accepted) snapshot folder.")],
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Last feature time, UTC (default: the midnight after the last event).",
            metavar="ISO-8601",
        ),
    ] = None,
    history_days: Annotated[
        int | None, typer.Option(help="Days of feature history before --as-of (default 14).")
    ] = None,
    every_days: Annotated[
        float | None, typer.Option(help="Days between feature times (default 1).")
    ] = None,
    half_life_days: Annotated[
        float | None, typer.Option(help="Half-life of interest weights in days (default 14).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with a \\[features] table.")
    ] = None,
) -> None:
    """Compute user_profile, item_stats and item_content from a snapshot, point-in-time correct."""

    from pipelines.features import FeatureConfig, build_features
    from pipelines.features.store import open_store

    given: dict[str, Any] = {
        "history_days": history_days,
        "every_days": every_days,
        "half_life_days": half_life_days,
    }
    given = {k: v for k, v in given.items() if v is not None}
    cfg = FeatureConfig.from_toml(config, **given) if config else FeatureConfig(**given)
    settings = load_settings()
    build = build_features(
        snapshot_uri=snapshot,
        out_dir=settings.feature_store_dir,
        cfg=cfg,
        as_of=utc_time(as_of, "--as-of"),
    )
    open_store(settings, apply=True)
    out_console.print(
        f"[bold green]built[/] features of {build.snapshot_id[:12]} at {len(build.times)} times "
        f"{build.times[0]:%Y-%m-%d %H:%M} .. {build.times[-1]:%Y-%m-%d %H:%M} UTC in {build.seconds:.1f} s"
    )
    out_console.print("  " + ", ".join(f"{n}: {r:,} rows" for n, r in build.rows.items()))
    out_console.print(f"  text model: {build.text_model}; segments: k={build.segments['k']}")
    if build.segments.get("note"):
        out_console.print(f"  [yellow]{escape(build.segments['note'])}[/]")
    out_console.print(f"  written to {build.data_dir}")


@features_app.command("materialize")
@reports_errors
def features_materialize_cmd() -> None:
    """Load the latest feature values into the online store (SQLite, or Redis in production)."""
    from pipelines.features.store import materialize

    info = materialize()
    out_console.print(
        f"[bold green]materialized[/] {', '.join(info['views'])} into the {info['online_store']} online store"
    )


def _show(value: Any) -> str:
    """A feature value for people: 4 significant digits, long vectors abbreviated."""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        head = ", ".join(_show(v) for v in value[:6])
        return f"[{head}, ...] ({len(value)} values)" if len(value) > 6 else f"[{head}]"
    return str(value)


@features_app.command("get")
@reports_errors
def features_get_cmd(
    entity: Annotated[str, typer.Argument(help="user or item")],
    entity_id: Annotated[str, typer.Argument(help="The user_id or item_id.")],
) -> None:
    """Print one user's or item's online feature values."""
    from pipelines.features.store import get_online

    values = get_online(entity, entity_id)
    if all(v is None for f in values.values() for v in f.values()):
        raise ShopMLError(
            f"the online store has no values for {entity} {entity_id!r}: an unknown id, or "
            "the store was not materialized since it appeared (`shopml features materialize`)"
        )
    table = Table("view", "feature", "value", box=None)
    for view, features in values.items():
        for name, value in features.items():
            table.add_row(view, name, escape(_show(value)))
    out_console.print(table)
