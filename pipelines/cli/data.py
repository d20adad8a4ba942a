"""``shopml data ...`` and ``shopml validate``: create, import, inspect and validate snapshots."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import (
    app,
    default_out,
    err_console,
    out_console,
    print_snapshot,
    reports_errors,
)

data_app = typer.Typer(help="Create, import and inspect data snapshots.", no_args_is_help=True)
import_app = typer.Typer(help="Import real shop data into a snapshot.", no_args_is_help=True)
app.add_typer(data_app, name="data")
data_app.add_typer(import_app, name="import")

PseudonymiseOption = Annotated[
    bool | None,
    typer.Option(
        "--pseudonymise/--no-pseudonymise",
        help="Store keyed pseudonyms instead of user and session ids (default: the "
        "pseudonymise setting; on in production). docs/privacy.md.",
        show_default=False,
    ),
]


def _privacy(pseudonymise: bool | None) -> Any:
    """What an import does to shoppers' ids: pseudonyms (the setting, or the flag), and
    the erasure list of the serving bucket (erased shoppers never come back)."""
    from pipelines.data.privacy import Privacy, privacy_key
    from pipelines.privacy import erasures
    from pipelines.promotion.bucket import open_bucket
    from pipelines.settings import load_settings

    settings = load_settings()
    on = settings.pseudonymise if pseudonymise is None else pseudonymise
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    erased = erasures.erased_hashes(erasures.read(bucket))
    key = privacy_key(settings, create=on) if on or erased else None
    return Privacy(key=key, pseudonymise=on, erased=erased)


@data_app.command("generate")
@reports_errors
def generate_cmd(
    out: Annotated[
        Path | None,
        typer.Option(
            help="Snapshot folder to write (default: $SHOPML_HOME/snapshots/generated-seed<S>)."
        ),
    ] = None,
    users: Annotated[int, typer.Option(help="Shoppers in the world.")] = 5_000,
    items: Annotated[
        int, typer.Option(help="Catalog size (at least 3 per leaf category).")
    ] = 2_000,
    events: Annotated[int, typer.Option(help="Exact number of events to generate.")] = 250_000,
    seed: Annotated[
        int, typer.Option(help="Random seed; the same seed gives byte-identical tables.")
    ] = 42,
    start: Annotated[
        datetime, typer.Option(help="Start of the period (UTC).", formats=["%Y-%m-%d"])
    ] = datetime(2026, 1, 1),
    days: Annotated[int, typer.Option(help="Length of the period in days.")] = 90,
    image_dim: Annotated[
        int, typer.Option(help="Image-embedding length; 0 for a catalog without images.")
    ] = 16,
    new_user_share: Annotated[
        float, typer.Option(help="Share of shoppers who sign up during the period.")
    ] = 0.30,
    new_item_share: Annotated[
        float, typer.Option(help="Share of items added during the period.")
    ] = 0.20,
    search_share: Annotated[
        float, typer.Option(help="Share of sessions that start with a search.")
    ] = 0.15,
    drift: Annotated[
        float, typer.Option(help="Strength of interest drift over the period (0 = none).")
    ] = 1.0,
    judged_queries: Annotated[
        int, typer.Option(help="Queries whose shown results get true relevance judgments.")
    ] = 500,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing snapshot at --out.")] = False,
) -> None:
    """Generate a synthetic shop with planted structure (docs/data-generator.md)."""
    from datetime import UTC

    from pipelines.data.generator import GeneratorConfig, generate_shop
    from pipelines.progress import progress_reporter

    cfg = GeneratorConfig(
        users=users, items=items, events=events, seed=seed, start=start.replace(tzinfo=UTC), days=days,
        image_dim=image_dim, new_user_share=new_user_share, new_item_share=new_item_share,
        search_share=search_share, drift=drift, judged_queries=judged_queries,
    )  # fmt: skip
    target = out or default_out(f"generated-seed{seed}")
    with progress_reporter("generating events", "events", console=err_console) as update:
        result = generate_shop(cfg, out=target, overwrite=overwrite, progress=update)
    print_snapshot("generated", result.path, result.snapshot_id, result.rows)
    out_console.print(
        f"  {result.rows['events'] / result.seconds:,.0f} events/s ({result.seconds:.1f} s)"
    )


@import_app.command("movielens-100k")
@reports_errors
def import_movielens_cmd(
    src: Annotated[
        Path, typer.Argument(help="The unpacked ml-100k folder (u.data, u.user, u.item).")
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Snapshot folder (default: $SHOPML_HOME/snapshots/movielens-100k)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing snapshot at --out.")] = False,
    pseudonymise: PseudonymiseOption = None,
) -> None:
    """Import MovieLens 100K: ratings become events (mapping in docs/data-import.md)."""
    from pipelines.data.importers.movielens import import_movielens_100k

    r = import_movielens_100k(
        src,
        out=out or default_out("movielens-100k"),
        overwrite=overwrite,
        privacy=_privacy(pseudonymise),
    )
    print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


@import_app.command("csv")
@reports_errors
def import_csv_cmd(
    mapping: Annotated[
        Path,
        typer.Option(help="YAML mapping from your files to the contract (docs/data-import.md)."),
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="Snapshot folder (default: $SHOPML_HOME/snapshots/<mapping source>)."),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Folder the mapping's paths are relative to (default: the mapping's folder)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing snapshot at --out.")] = False,
    pseudonymise: PseudonymiseOption = None,
) -> None:
    """Import any shop's CSV or parquet files through a declarative mapping."""
    from pipelines.data.importers.mapping import import_mapped, load_mapping

    target = out or default_out(load_mapping(mapping, base_dir=data_dir).source)
    r = import_mapped(
        mapping,
        out=target,
        base_dir=data_dir,
        overwrite=overwrite,
        privacy=_privacy(pseudonymise),
    )
    print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


@import_app.command("judgments")
@reports_errors
def import_judgments_cmd(
    src: Annotated[
        Path, typer.Argument(help="CSV of query, product title, description and relevance.")
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            help="Snapshot folder (default: $SHOPML_HOME/snapshots/judgments-<file stem>)."
        ),
    ] = None,
    query_column: Annotated[str, typer.Option(help="Column with the query text.")] = "query",
    title_column: Annotated[
        str, typer.Option(help="Column with the product title.")
    ] = "product_title",
    description_column: Annotated[
        str, typer.Option(help="Column with the product description (may be absent).")
    ] = "product_description",
    relevance_column: Annotated[
        str, typer.Option(help="Column with the graded relevance.")
    ] = "median_relevance",
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    created_ts: Annotated[
        str, typer.Option(help="created_ts for the items (such files carry no dates), ISO 8601.")
    ] = "1970-01-01T00:00:00Z",
    overwrite: Annotated[bool, typer.Option(help="Replace an existing snapshot at --out.")] = False,
) -> None:
    """Import query-product relevance judgments (e.g. CrowdFlower) into items + judgments."""
    from pipelines.data.importers.judgments import JudgmentColumns, import_judgments

    cols = JudgmentColumns(
        query=query_column,
        title=title_column,
        description=description_column,
        relevance=relevance_column,
    )
    r = import_judgments(
        src,
        out=out or default_out(f"judgments-{src.stem}"),
        columns=cols,
        encoding=encoding,
        created_ts=created_ts,
        overwrite=overwrite,
    )
    print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


@import_app.command("events-log")
@reports_errors
def import_events_log_cmd(
    base: Annotated[
        Path, typer.Option(help="The snapshot the events add to (users, items, earlier events).")
    ],
    spool: Annotated[
        Path | None,
        typer.Argument(
            help="The serving API's events folder (default: the serving_events_dir setting)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Snapshot folder (default: $SHOPML_HOME/snapshots/events-log-<base id>)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing snapshot at --out.")] = False,
    pseudonymise: PseudonymiseOption = None,
) -> None:
    """The serving API's events and search answers, added to BASE as a new snapshot: the
    next retrain learns from what was served and clicked (docs/serving.md)."""
    from pipelines.data.importers.events_log import import_events_log
    from pipelines.data.snapshot import Snapshot
    from pipelines.settings import load_settings

    folder = spool or load_settings().serving_events_dir
    target = out or default_out(f"events-log-{Snapshot.open(base).id[:12]}")
    r = import_events_log(
        folder, base=base, out=target, overwrite=overwrite, privacy=_privacy(pseudonymise)
    )
    print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


@data_app.command("describe")
@reports_errors
def describe_cmd(
    snapshot: Annotated[Path, typer.Argument(help="Snapshot folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    window_days: Annotated[
        int, typer.Option(help="Final window for the cold-start figures, in days.")
    ] = 14,
) -> None:
    """Row counts, time range, sparsity, popularity skew, funnel and cold-start shares."""
    from pipelines.data.describe import describe_snapshot

    summary = describe_snapshot(snapshot, window_days=window_days)
    if as_json:
        out_console.print_json(json.dumps(summary))
        return
    table = Table(
        title=f"snapshot {summary['snapshot_id'][:12]} ({summary['source']})",
        box=None,
        show_header=False,
    )
    for section, values in summary.items():
        if isinstance(values, dict):
            for key, value in values.items():
                table.add_row(f"[bold]{section}[/]", key, _fmt(value))
        elif section != "snapshot_id":
            table.add_row(f"[bold]{section}[/]", "", escape(_fmt(values)))
    out_console.print(table)
    if summary["integrity"].startswith("ALTERED"):
        err_console.print(
            f"[bold yellow]warning:[/] {escape(summary['integrity'])}: these figures describe "
            "files that are no longer the snapshot that was written",
            soft_wrap=True,
        )


@app.command("validate")
@reports_errors
def validate_cmd(
    snapshot: Annotated[Path, typer.Argument(help="Snapshot folder to validate.")],
    baseline: Annotated[
        Path | None,
        typer.Option(help="The previous accepted snapshot, for drift and row-count checks."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with a \\[validation] table of thresholds.")
    ] = None,
) -> None:
    """Validate a snapshot with Great Expectations; accept it or quarantine it (exit code 1)."""
    from pipelines.validation.config import ValidationConfig
    from pipelines.validation.validate import validate_snapshot

    cfg = ValidationConfig.from_toml(config) if config else ValidationConfig()
    report = validate_snapshot(snapshot_uri=snapshot, baseline_uri=baseline, cfg=cfg)
    passed = len(report.checks) - len(report.failed)
    if report.accepted:
        out_console.print(
            f"[bold green]accepted[/] {report.snapshot_id[:12]}: all {passed} checks passed ({report.seconds:.1f} s)"
        )
    else:
        out_console.print(
            f"[bold red]quarantined[/] {report.snapshot_id[:12]}: {len(report.failed)} of {len(report.checks)} checks failed"
        )
        for check in report.failed:
            out_console.print(f"  - {escape(check.summary)}", highlight=False)
    if report.report.get("baseline"):
        b = report.report["baseline"]
        out_console.print(
            f"  vs baseline {b['snapshot_id'][:12]}: {b['new_user_share']:.1%} new users, {b['new_item_share']:.1%} new items"
        )
    out_console.print(f"  results: {report.folder / 'result.json'}")
    if (report.folder / "data_docs" / "index.html").exists():
        out_console.print(f"  data docs: {report.folder / 'data_docs' / 'index.html'}")
    if not report.accepted:
        raise typer.Exit(code=1)
