"""The ``shopml`` command line. Commands are thin: parse options, call a step, print.

Errors a user can cause (bad input, bad settings) print one message and exit with
code 2; they never show a traceback.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table

from pipelines import __version__
from pipelines.errors import ShopMLError
from pipelines.settings import load_settings

app = typer.Typer(
    help="ShopML: Airflow-orchestrated search and recommendation for shops.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Create, import and inspect data snapshots.", no_args_is_help=True)
import_app = typer.Typer(help="Import real shop data into a snapshot.", no_args_is_help=True)
features_app = typer.Typer(
    help="Build, materialize and read the feature store.", no_args_is_help=True
)
app.add_typer(data_app, name="data")
app.add_typer(features_app, name="features")
data_app.add_typer(import_app, name="import")

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
            _print_error(str(exc))
            raise typer.Exit(code=2) from None
        except OSError as exc:  # disk full, permissions, a path that is a file, ...
            where = f": {exc.filename}" if exc.filename else ""
            _print_error(f"{exc.strerror or exc}{where}")
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


def _print_error(message: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        out_console.print(f"shopml {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show debug log lines.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=err_console, show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("great_expectations", "feast", "alembic", "urllib3", "botocore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _default_out(name: str) -> Path:
    return load_settings().snapshots_dir / name


def _print_snapshot(
    kind: str, path: Path, snapshot_id: str, rows: dict[str, int], notes: tuple[str, ...] = ()
) -> None:
    out_console.print(f"[bold green]{kind}[/] snapshot [bold]{snapshot_id[:12]}[/] at {path}")
    out_console.print("  " + ", ".join(f"{n}: {r:,}" for n, r in rows.items()))
    for note in notes:
        out_console.print(f"  note: {note}", highlight=False)


@app.command("config")
@reports_errors
def config_cmd() -> None:
    """Print the settings in effect (SHOPML_ENV, SHOPML_HOME, service URIs)."""
    table = Table("setting", "value", box=None)
    for key, value in load_settings().describe().items():
        table.add_row(key, value)
    out_console.print(table)


# ----------------------------------------------------------------------------- data


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
    target = out or _default_out(f"generated-seed{seed}")
    with progress_reporter("generating events", "events", console=err_console) as update:
        result = generate_shop(cfg, out=target, overwrite=overwrite, progress=update)
    _print_snapshot("generated", result.path, result.snapshot_id, result.rows)
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
) -> None:
    """Import MovieLens 100K: ratings become events (mapping in docs/data-import.md)."""
    from pipelines.data.importers.movielens import import_movielens_100k

    r = import_movielens_100k(src, out=out or _default_out("movielens-100k"), overwrite=overwrite)
    _print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


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
) -> None:
    """Import any shop's CSV or parquet files through a declarative mapping."""
    from pipelines.data.importers.mapping import import_mapped, load_mapping

    target = out or _default_out(load_mapping(mapping, base_dir=data_dir).source)
    r = import_mapped(mapping, out=target, base_dir=data_dir, overwrite=overwrite)
    _print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


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
        out=out or _default_out(f"judgments-{src.stem}"),
        columns=cols,
        encoding=encoding,
        created_ts=created_ts,
        overwrite=overwrite,
    )
    _print_snapshot("imported", r.path, r.snapshot_id, r.rows, r.notes)


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
            table.add_row(f"[bold]{section}[/]", "", _fmt(values))
    out_console.print(table)


@app.command("validate")
@reports_errors
def validate_cmd(
    snapshot: Annotated[Path, typer.Argument(help="Snapshot folder to validate.")],
    baseline: Annotated[
        Path | None,
        typer.Option(help="The previous accepted snapshot, for drift and row-count checks."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="TOML file with a [validation] table of thresholds.")
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


@features_app.command("build")
@reports_errors
def features_build_cmd(
    snapshot: Annotated[Path, typer.Argument(help="A validated (accepted) snapshot folder.")],
    as_of: Annotated[
        datetime | None,
        typer.Option(
            help="Last feature time, UTC (default: the midnight after the last event).",
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
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
    config: Annotated[Path | None, typer.Option(help="TOML file with a [features] table.")] = None,
) -> None:
    """Compute user_profile, item_stats and item_content from a snapshot, point-in-time correct."""
    from datetime import UTC

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
        as_of=as_of.replace(tzinfo=UTC) if as_of else None,
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
    table = Table("view", "feature", "value", box=None)
    for view, features in values.items():
        for name, value in features.items():
            table.add_row(view, name, escape(_show(value)))
    out_console.print(table)
    if all(v is None for f in values.values() for v in f.values()):
        out_console.print(
            f"[yellow]no online values for {entity} {entity_id!r}[/] (unknown id, or run `shopml features materialize`)"
        )


# ----------------------------------------------------------------------------- models


def _stage_progress() -> Callable[[str, int, int], None]:
    """A ``progress(stage, done, total)`` that logs each stage's counts and rate."""
    import time as _time

    log = logging.getLogger("shopml")
    state: dict[str, float] = {}

    def update(stage: str, done: int, total: int) -> None:
        now = _time.perf_counter()
        start = state.setdefault(f"{stage}:start", now)
        if now - state.get(stage, 0.0) >= 5.0 or done >= total:
            state[stage] = now
            rate = done / max(now - start, 1e-9)
            log.info(
                "%s: %s / %s users (%s users/s)", stage, f"{done:,}", f"{total:,}", f"{rate:,.0f}"
            )

    return update


@app.command("train")
@reports_errors
def train_cmd(
    snapshot: Annotated[Path, typer.Option("--snapshot", help="Snapshot folder to train on.")],
    train_until: Annotated[
        datetime | None,
        typer.Option(
            "--train-until",
            help="Train on events before this UTC time (default: the start of the evaluation window, [evaluate] holdout_days before the midnight after the last event).",
            formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"],
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML with [train], [candidates], [ranker], [features] (and [evaluate]) tables."
        ),
    ] = None,
) -> None:
    """Validate, build features, fit generators and re-ranker, register a `challenger` in MLflow."""
    from datetime import UTC

    from pipelines.recommender.plan import TrainConfig, train

    cfg = TrainConfig.from_toml(config) if config else TrainConfig()
    progress = _stage_progress()
    outcome = train(
        snapshot,
        settings=load_settings(),
        cfg=cfg,
        until=train_until.replace(tzinfo=UTC) if train_until else None,
        progress=progress,
    )
    m = outcome.result.metrics
    out_console.print(
        f"[bold green]registered[/] {outcome.model_name} version [bold]{outcome.version}[/] "
        f"(alias challenger) in {outcome.seconds:.0f} s"
    )
    out_console.print(f"  model URI: {outcome.uri}")
    out_console.print(f"  MLflow run: {outcome.run_id}")
    out_console.print(
        f"  trained until {outcome.until:%Y-%m-%d %H:%M} UTC on snapshot {outcome.snapshot_id[:12]}; "
        f"validation nDCG@{cfg.ranker.eval_at} {m.get(f'ndcg_at_{cfg.ranker.eval_at}', 0):.4f}, "
        f"candidate recall {m['candidate_recall']:.3f}"
    )
    best = max(outcome.result.generator_metrics.items(), key=lambda kv: kv[1]["ndcg"], default=None)
    if best is not None:
        out_console.print(
            f"  best single generator on validation: {best[0]} nDCG {best[1]['ndcg']:.4f}"
        )


def _read_users(path: Path) -> Any:
    import pandas as pd

    if not path.is_file():
        raise ShopMLError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, dtype={"user_id": str, "gender": str, "region": str})
    except (ValueError, OSError) as exc:
        raise ShopMLError(f"{path}: cannot read users: {exc}") from exc
    if "user_id" not in frame.columns:
        raise ShopMLError(
            f"{path}: needs a user_id column; it has {', '.join(map(str, frame.columns))}"
        )
    missing = frame["user_id"].isna()
    if missing.any():
        row = int(missing.to_numpy().nonzero()[0][0]) + 2
        raise ShopMLError(f"{path}, row {row}, column 'user_id': empty user id")
    if (
        "recent_items" in frame.columns
        and frame["recent_items"].map(lambda v: isinstance(v, str)).any()
    ):
        frame["recent_items"] = frame["recent_items"].map(
            lambda v: [s for s in str(v).split("|") if s] if isinstance(v, str) else []
        )
    return frame


@app.command("recommend")
@reports_errors
def recommend_cmd(
    model: Annotated[
        str,
        typer.Option(
            help="Model URI (models:/shopml-recommender@challenger, models:/NAME/VERSION) or a bundle folder."
        ),
    ],
    users: Annotated[
        Path,
        typer.Option(
            help="CSV or parquet with user_id (optional: age, gender, region, recent_items as 'id|id')."
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output file, .parquet or .csv.")],
    k: Annotated[int, typer.Option(min=1, max=1000, help="Items per user.")] = 10,
    explain: Annotated[
        bool, typer.Option("--explain", help="Add the top 3 reasons in words.")
    ] = False,
) -> None:
    """Top-k recommendations for a file of users; users with no history get the cold-start path."""
    from pipelines.progress import progress_reporter
    from pipelines.registry.models import load_recommender, predict_frame

    if out.suffix not in (".parquet", ".csv"):
        raise ShopMLError(f"--out {out}: use a .parquet or .csv file name")
    frame = _read_users(users)
    rec = load_recommender(model, load_settings())
    with progress_reporter("recommending", "users", console=err_console) as update:
        parts = []
        step = 5_000
        for lo in range(0, len(frame), step):
            parts.append(predict_frame(rec, frame.iloc[lo : lo + step], k=k, explain=explain))
            update(min(lo + step, len(frame)), len(frame))
    import pandas as pd

    result = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["user_id", "rank", "item_id", "score"])
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    if out.suffix == ".parquet":
        result.to_parquet(tmp, index=False)
    else:
        result.to_csv(tmp, index=False)
    tmp.replace(out)
    known = (
        frame["user_id"].astype(str).isin(set(rec.ctx.user_ids[rec.ctx.history.user_events > 0]))
    )
    out_console.print(
        f"[bold green]wrote[/] {len(result):,} recommendations for {len(frame):,} users to {out} "
        f"({int((~known).sum()):,} without history: cold-start path)"
    )
    if explain and len(result):
        first = result[result["user_id"] == result["user_id"].iloc[0]].head(3)
        for row in first.itertuples():
            out_console.print(
                f"  {row.user_id} #{row.rank} {row.item_id}: {escape(str(row.reasons))}"
            )


@app.command("evaluate")
@reports_errors
def evaluate_cmd(
    model: Annotated[
        str,
        typer.Option(
            help="Challenger: models:/shopml-recommender@challenger, models:/NAME/VERSION or a bundle folder."
        ),
    ],
    snapshot: Annotated[
        Path, typer.Option(help="Snapshot whose frozen evaluation set scores the models.")
    ],
    champion: Annotated[
        str | None,
        typer.Option(help="Compare with this model instead of the registry's `champion` alias."),
    ] = None,
    no_champion: Annotated[
        bool,
        typer.Option("--no-champion", help="Ignore any champion: value and baseline checks only."),
    ] = False,
    config: Annotated[
        Path | None, typer.Option(help="TOML with [evaluate] and [gate] tables.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for verdict.json, report.html, summary.md, metrics.json."),
    ] = None,
    no_log: Annotated[
        bool, typer.Option("--no-log", help="Do not log to the model's MLflow run.")
    ] = False,
) -> None:
    """Score a model and the champion on a snapshot's frozen evaluation set; judge the gate.

    Exit 0 when blessed, 1 when not."""
    from pipelines.evaluation.evaluate import EvaluateConfig, evaluate

    if champion and no_champion:
        raise ShopMLError("--champion and --no-champion exclude each other")
    cfg = EvaluateConfig.from_toml(config) if config else EvaluateConfig()
    result = evaluate(
        model_uri=model,
        snapshot_uri=snapshot,
        settings=load_settings(),
        cfg=cfg,
        champion_uri=champion,
        use_champion=not no_champion,
        out_dir=out,
        log_to_mlflow=not no_log,
    )
    es = result.eval_set
    out_console.print(
        f"evaluation set {es.hash[:12]}: {len(es.users):,} users, window "
        f"{es.start:%Y-%m-%d} to {es.end:%Y-%m-%d} (snapshot {es.snapshot_id[:12]})"
    )
    k = cfg.evaluate.headline_k
    table = Table(title=f"metrics at k={k}", show_edge=False)
    table.add_column("metric")
    table.add_column("challenger", justify="right")
    table.add_column("champion", justify="right")
    table.add_column("popularity", justify="right")
    for m in ("ndcg", "recall", "precision", "map", "hit_rate", "mrr", "coverage"):
        key = f"{m}@{k}"
        row = [key]
        for scores in (result.challenger, result.champion, result.popularity):
            row.append(
                "–" if scores is None else f"{scores.values['all'].get(key, float('nan')):.4f}"
            )
        table.add_row(*row)
    out_console.print(table)
    for note in result.judgement.notes:
        out_console.print(f"  note: {escape(note)}")
    for o in result.judgement.outcomes:
        mark = {True: "[green]pass[/]", False: "[red]fail[/]", None: "[dim]skip[/]"}[o.passed]
        out_console.print(f"  {mark}  {escape(o.reason)}", soft_wrap=True)
    verdict = "[bold green]BLESSED[/]" if result.blessed else "[bold red]NOT BLESSED[/]"
    out_console.print(f"{verdict}  report: {result.out_dir / 'report.html'}", soft_wrap=True)
    if result.run_id:
        out_console.print(
            f"  logged to MLflow run {result.run_id} and tagged on {result.verdict['model']['uri']}"
        )
    if not result.blessed:
        raise typer.Exit(code=1)


review_app = typer.Typer(
    help="Review pending challengers (through Airflow's REST API).", no_args_is_help=True
)
promotions_app = typer.Typer(
    help="The promotion ledger of the serving bucket.", no_args_is_help=True
)
dags_app = typer.Typer(help="Trigger ShopML's Airflow DAGs.", no_args_is_help=True)
app.add_typer(review_app, name="review")
app.add_typer(promotions_app, name="promotions")
app.add_typer(dags_app, name="dags")

UserOption = Annotated[
    str,
    typer.Option(
        "--user", envvar="SHOPML_AIRFLOW_USER", help="Airflow login (env SHOPML_AIRFLOW_USER)."
    ),
]


def _airflow(user: str) -> Any:
    import os

    from pipelines.orchestration.airflow_api import AirflowClient

    password = os.environ.get("SHOPML_AIRFLOW_PASSWORD") or typer.prompt(
        f"Airflow password for {user}", hide_input=True
    )
    return AirflowClient(load_settings().airflow_api_url, user, password)


@review_app.command("list")
@reports_errors
def review_list_cmd(user: UserOption) -> None:
    """Pending approval requests with their summaries."""
    pending = _airflow(user).pending_reviews()
    if not pending:
        out_console.print("no pending reviews")
        return
    for d in pending:
        ti = d.get("task_instance", {})
        who = ", ".join(u.get("name", u.get("id", "")) for u in d.get("assigned_users", []))
        out_console.print(
            f"[bold]{escape(str(ti.get('dag_run_id', '')))}[/]  {escape(d['subject'])}  "
            f"(asked {d['created_at']}; reviewers: {escape(who) or 'anyone'})",
            soft_wrap=True,
        )
        out_console.print(escape(d.get("body") or ""), soft_wrap=True)


def _answer(run_id: str, approve: bool, comment: str, user: str) -> None:
    result = _airflow(user).answer(run_id, approve, comment)
    word = "approved" if approve else "rejected"
    by = (result.get("responded_by_user") or {}).get("name", user)
    out_console.print(f"[bold]{word}[/] {escape(run_id)} as {escape(str(by))}")


@review_app.command("approve")
@reports_errors
def review_approve_cmd(
    dag_run: Annotated[str, typer.Argument(help="The retrain DAG run id (see `review list`).")],
    user: UserOption,
    comment: Annotated[str, typer.Option(help="Recorded in the ledger.")] = "",
) -> None:
    """Approve a challenger: the DAG promotes it."""
    _answer(dag_run, True, comment, user)


@review_app.command("reject")
@reports_errors
def review_reject_cmd(
    dag_run: Annotated[str, typer.Argument(help="The retrain DAG run id (see `review list`).")],
    user: UserOption,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Reject a challenger: the champion stays."""
    _answer(dag_run, False, comment, user)


@promotions_app.command("log")
@reports_errors
def promotions_log_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every promotion and rollback, oldest first, from the serving bucket's ledger."""
    from pipelines.promotion.promote import ledger
    from pipelines.registry.models import MODEL_NAME

    lines = ledger(load_settings(), MODEL_NAME)
    if as_json:
        for line in lines:
            out_console.print_json(json.dumps(line))
        return
    if not lines:
        out_console.print("no promotions yet")
        return
    table = Table(show_edge=False)
    for col in ("time", "action", "version", "previous", "by", "snapshot", "note"):
        table.add_column(col)
    for e in lines:
        table.add_row(
            e["time"], e["action"], str(e["version"]), str(e.get("previous_version") or "–"),
            e.get("approved_by", ""), e.get("snapshot_id", "")[:12],
            e.get("reason") or e.get("comment") or "",
        )  # fmt: skip
    out_console.print(table)


@app.command("promote")
@reports_errors
def promote_cmd(
    version: Annotated[int, typer.Option(help="Model version to serve.")],
) -> None:
    """Copy a blessed and approved version to the serving bucket (the retrain DAG's step)."""
    from pipelines.promotion.promote import promote

    out = promote(version=version, settings=load_settings())
    state = "promoted" if out.changed else "already served:"
    out_console.print(f"[bold green]{state}[/] version {out.version} (previous {out.previous})")


@app.command("rollback")
@reports_errors
def rollback_cmd(
    to: Annotated[int, typer.Option("--to", help="An earlier promoted version.")],
    reason: Annotated[str, typer.Option(help="Why (goes to the ledger).")],
    user: UserOption,
) -> None:
    """Serve an earlier version again (triggers the shopml_rollback DAG)."""
    from pipelines.orchestration.airflow_api import ROLLBACK_DAG

    if len(reason.strip()) < 3:
        raise ShopMLError("--reason: say why (at least 3 characters)")
    run = _airflow(user).trigger(
        ROLLBACK_DAG, {"version": to, "reason": reason, "requested_by": user}
    )
    out_console.print(
        f"triggered {ROLLBACK_DAG} run {escape(run['dag_run_id'])} to serve version {to}"
    )


@dags_app.command("announce")
@reports_errors
def dags_announce_cmd(
    snapshot: Annotated[Path, typer.Argument(help="The snapshot that landed.")],
    user: UserOption,
    config: Annotated[str, typer.Option(help="Pipeline TOML file for the run.")] = "",
) -> None:
    """Tell Airflow a new snapshot landed (a `shopml-snapshot` asset event): it starts a retrain."""
    from pipelines.data.snapshot import Snapshot

    snap = Snapshot.open(snapshot)
    event = _airflow(user).announce_snapshot(str(snap.path), config or None)
    out_console.print(
        f"announced snapshot {snap.id[:12]} ({snap.path}) as asset event {event.get('id', '')}: "
        "shopml_retrain will run on it"
    )


@dags_app.command("trigger")
@reports_errors
def dags_trigger_cmd(
    which: Annotated[str, typer.Argument(help="retrain")],
    user: UserOption,
    snapshot: Annotated[
        str, typer.Option(help="Snapshot folder (default: the newest under SHOPML_HOME).")
    ] = "",
    config: Annotated[str, typer.Option(help="Pipeline TOML file.")] = "",
) -> None:
    """Start a shopml_retrain run now."""
    from pipelines.orchestration.airflow_api import RETRAIN_DAG

    if which != "retrain":
        raise ShopMLError(f"unknown DAG {which!r}: use `retrain` (rollback: `shopml rollback`)")
    run = _airflow(user).trigger(RETRAIN_DAG, {"snapshot": snapshot, "config": config})
    out_console.print(f"triggered {RETRAIN_DAG} run {escape(run['dag_run_id'])}")


benchmark_app = typer.Typer(
    help="Recommendation quality and speed benchmarks.", no_args_is_help=True
)
app.add_typer(benchmark_app, name="benchmark")


def _write_results(doc: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2) + "\n")
        out_console.print(f"results written to {out}")


def _metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    table = Table("model", "nDCG@10", "P@10", "R@10", "MAP@10", title=title, box=None)
    for name, m in metrics.items():
        table.add_row(
            name,
            f"{m['ndcg']:.4f}",
            f"{m['precision']:.4f}",
            f"{m['recall']:.4f}",
            f"{m['map']:.4f}",
        )
    return table


@benchmark_app.command("movielens")
@reports_errors
def benchmark_movielens_cmd(
    data: Annotated[Path, typer.Option(help="The ml-100k folder (u.data, u.user, u.item).")],
    folds: Annotated[int, typer.Option(min=1, max=20, help="Ranker training folds.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
) -> None:
    """MovieLens-100K under Microsoft Recommenders' protocol (stratified 75/25, seed 42, k=10)."""
    from pipelines.evaluation.benchmark import machine, movielens

    doc = movielens(data, folds=folds)
    doc["machine"] = machine()
    doc["date"] = datetime.now().astimezone().isoformat(timespec="seconds")
    out_console.print(
        _metrics_table(f"MovieLens-100K, {doc['test_users']} test users", doc["metrics"])
    )
    out_console.print(
        f"pipeline vs best single ({doc['best_single']['name']}): {doc['pipeline_vs_best_single']:+.1%}; "
        f"trained in {doc['train_seconds']:.0f} s"
    )
    _write_results(doc, out)


@benchmark_app.command("synthetic")
@reports_errors
def benchmark_synthetic_cmd(
    events: Annotated[int, typer.Option(min=10_000, help="Events to generate.")] = 1_000_000,
    users: Annotated[int | None, typer.Option(help="Users (default events / 20).")] = None,
    items: Annotated[
        int | None, typer.Option(help="Items (default events / 200, at most 50,000).")
    ] = None,
    recommend_users: Annotated[
        int, typer.Option(help="Users in the batch-recommend timing.")
    ] = 100_000,
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
) -> None:
    """Generate a shop, hold out its last 14 days, run `shopml train` and score the held-out days."""
    from pipelines.evaluation.benchmark import machine, synthetic

    progress = _stage_progress()
    doc = synthetic(
        events, users=users, items=items, recommend_users=recommend_users, progress=progress
    )
    doc["machine"] = machine()
    doc["date"] = datetime.now().astimezone().isoformat(timespec="seconds")
    for label, part in doc["results"].items():
        out_console.print(_metrics_table(f"{label} ({part['users']:,})", part["metrics"]))
    out_console.print(
        f"re-ranked vs best single ({doc['best_single']['name']}): {doc['pipeline_vs_best_single']:+.1%}; "
        f"cold start vs global popularity: {doc['cold_start_vs_global_popularity']:+.1%}; "
        f"graded relevance: {doc['pipeline_vs_best_single_graded']:+.1%} over {doc['best_single_graded']['name']}"
    )
    out_console.print(
        f"train {doc['train_seconds']:.0f} s for {events:,} events; recommend {doc['recommend_users']:,} users "
        f"in {doc['recommend_seconds']:.1f} s"
    )
    _write_results(doc, out)


def main() -> None:
    """Console-script entry point."""
    app()
