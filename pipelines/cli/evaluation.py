"""``shopml evaluate``: score a model and the champion on the frozen evaluation set; judge the gate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import (
    app,
    out_console,
    reports_errors,
)
from pipelines.errors import ShopMLError
from pipelines.settings import load_settings


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
        Path | None, typer.Option(help="TOML with \\[evaluate] and \\[gate] tables.")
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
    baselines = result.comparison.baselines
    for name in baselines:
        table.add_column(escape(name), justify="right")
    for m in ("ndcg", "recall", "precision", "map", "hit_rate", "mrr", "coverage"):
        key = f"{m}@{k}"
        row = [key]
        for scores in (result.challenger, result.champion, *baselines.values()):
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
