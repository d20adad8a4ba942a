"""``shopml train`` and ``shopml recommend``: train a challenger, answer a file of users."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from pipelines.cli.app import (
    app,
    err_console,
    out_console,
    reports_errors,
    utc_time,
)
from pipelines.errors import ShopMLError
from pipelines.io import atomic_path
from pipelines.progress import stage_progress
from pipelines.settings import load_settings


@app.command("train")
@reports_errors
def train_cmd(
    snapshot: Annotated[Path, typer.Option("--snapshot", help="Snapshot folder to train on.")],
    train_until: Annotated[
        str | None,
        typer.Option(
            "--train-until",
            help="Train on events before this UTC time (default: the start of the evaluation window, \\[evaluate] holdout_days before the midnight after the last event).",
            metavar="ISO-8601",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="TOML with \\[train], \\[candidates], \\[ranker], \\[features] (and \\[evaluate]) tables."
        ),
    ] = None,
) -> None:
    """Validate, build features, fit generators and re-ranker, register a `challenger` in MLflow."""

    from pipelines.orchestration.config import PipelineConfig
    from pipelines.registry.challenger import train_challenger

    cfg = PipelineConfig.from_toml(config).train
    progress = stage_progress()
    outcome = train_challenger(
        snapshot,
        settings=load_settings(),
        cfg=cfg,
        until=utc_time(train_until, "--train-until"),
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
    from pipelines.recommender.predict import read_users_file, recommend_in_chunks, unknown_items
    from pipelines.registry.models import load_recommender

    if out.suffix not in (".parquet", ".csv"):
        raise ShopMLError(f"--out {out}: use a .parquet or .csv file name")
    frame = read_users_file(users)
    rec = load_recommender(model, load_settings())
    missing, example = unknown_items(rec, frame)
    if missing:
        err_console.print(
            f"[yellow]note:[/] {missing:,} recent item id(s) are not in the model's catalog "
            f"and are ignored, e.g. {escape(repr(example))}",
            soft_wrap=True,
        )
    with progress_reporter("recommending", "users", console=err_console) as update:
        result = recommend_in_chunks(rec, frame, k=k, explain=explain, progress=update)
    with atomic_path(out) as tmp:
        if out.suffix == ".parquet":
            result.to_parquet(tmp, index=False)
        else:
            result.to_csv(tmp, index=False)
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
                f"  {row.user_id} #{row.rank} {row.item_id} {escape(str(row.title))!s} ({escape(str(row.category))}): {escape(str(row.reasons))}"
            )
