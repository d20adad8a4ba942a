"""``shopml benchmark ...``: recommendation quality and speed benchmarks."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.app import (
    app,
    out_console,
    reports_errors,
    write_results,
)
from pipelines.errors import ShopMLError
from pipelines.progress import stage_progress

benchmark_app = typer.Typer(
    help="Recommendation and search quality and speed benchmarks.", no_args_is_help=True
)
app.add_typer(benchmark_app, name="benchmark")


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
    write_results(doc, out)


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

    progress = stage_progress()
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
    write_results(doc, out)


_EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"


@benchmark_app.command("completejourney")
@reports_errors
def benchmark_completejourney_cmd(
    data: Annotated[
        Path,
        typer.Option(
            help="The completejourney-a folder (transactions.csv, products.csv, demographics.csv)."
        ),
    ],
    config: Annotated[
        Path,
        typer.Option(
            help="Pipeline config (\\[validation], \\[train], \\[candidates], \\[ranker], \\[evaluate])."
        ),
    ] = _EXAMPLES / "completejourney.toml",
    mapping: Annotated[Path, typer.Option(help="The import mapping.")] = _EXAMPLES
    / "completejourney.yaml",
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
) -> None:
    """Real grocery purchases: train before 2017-11-01, score the households that come back, beside every simple baseline."""
    from pipelines.evaluation.benchmark import completejourney, machine

    doc = completejourney(data, config=config, mapping=mapping, progress=stage_progress())
    doc["machine"] = machine()
    doc["date"] = datetime.now().astimezone().isoformat(timespec="seconds")
    table = Table("model", "nDCG@10 [95% CI]", "R@10", "ShopML − model [95% CI]", box=None)
    for name, m in doc["metrics"].items():
        d = m.get("shopml_minus_this")
        table.add_row(
            name,
            f"{m['ndcg']:.4f} [{m['ci'][0]:.4f}, {m['ci'][1]:.4f}]",
            f"{m['recall']:.4f}",
            "–" if d is None else f"{d['mean']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]",
        )
    out_console.print(table)
    out_console.print(
        f"{doc['test_households']:,} test households; ShopML vs best baseline "
        f"({doc['best_baseline']['name']}): {doc['shopml_vs_best_baseline']:+.1%}; target nDCG@10 "
        f"{doc['target_ndcg']}: {'reached' if doc['reaches_target'] else 'missed'}"
    )
    write_results(doc, out)


@benchmark_app.command("search")
@reports_errors
def benchmark_search_cmd(
    snapshot: Annotated[
        Path, typer.Option(help="Snapshot with a catalog and judgments or a query log.")
    ],
    protocol: Annotated[
        str,
        typer.Option(
            help="judgments (cross-validated on the judged queries) or log (train on the query log, "
            "score the last --holdout-days; personal re-ranking)."
        ),
    ] = "judgments",
    holdout_days: Annotated[
        float, typer.Option(min=1, help="log: days of queries held out.")
    ] = 7.0,
    folds: Annotated[
        int, typer.Option(min=2, max=20, help="Query-grouped cross-validation folds.")
    ] = 5,
    config: Annotated[
        Path | None, typer.Option(help="Pipeline config TOML; its \\[search] table is read.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Write the results JSON here.")] = None,
    runs_out: Annotated[
        Path | None,
        typer.Option(
            help="Write every method's ranked lists here (CSV: method, fold, query, rank, item_id, score)."
        ),
    ] = None,
) -> None:
    """BM25, semantic, hybrid, learned (and personal) search on a snapshot (whole catalog, k=10)."""
    from pipelines.evaluation.benchmark import machine
    from pipelines.evaluation.search_benchmark import run, run_log
    from pipelines.search.config import SearchConfig

    if protocol not in ("judgments", "log"):
        raise ShopMLError(f"--protocol {protocol!r}: use judgments or log")
    cfg = SearchConfig.from_toml(config)
    if protocol == "log":
        doc, runs = run_log(snapshot, cfg, holdout_days=holdout_days)
    else:
        doc, runs = run(snapshot, cfg, folds=folds)
    doc["machine"] = machine()
    doc["date"] = datetime.now().astimezone().isoformat(timespec="seconds")
    table = Table(
        "method", "nDCG@10 [95% CI]", "MRR", "R@10", "zero results", "− BM25 [95% CI]", box=None
    )
    for name, m in doc["metrics"].items():
        n, d = m["ndcg"], m["ndcg_minus_bm25"]  # bm25 is every protocol's first method
        table.add_row(
            name,
            f"{n['mean']:.4f} [{n['low']:.4f}, {n['high']:.4f}]",
            f"{m['mrr']['mean']:.4f}",
            f"{m['recall']['mean']:.4f}",
            f"{m['zero_result']['mean']:.1%}",
            "–" if name == "bm25" else f"{d['mean']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]",
        )
    if protocol == "log":
        out_console.print(
            f"{doc['train_queries']:,} training and {doc['test_queries']:,} held-out queries, "
            f"{doc['items']:,} items; personal vs learned {doc['personal_vs_learned']:+.1%}, "
            f"vs BM25 {doc['personal_vs_bm25']:+.1%}"
        )
    else:
        out_console.print(
            f"{doc['queries']} queries, {doc['items']:,} items, {doc['judgments']:,} judgments; {folds}-fold CV"
        )
    out_console.print(table)
    if runs_out is not None:
        runs_out.parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(runs_out, index=False)
        out_console.print(f"ranked lists written to {runs_out}")
    write_results(doc, out)
