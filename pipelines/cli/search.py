"""``shopml search ...``: train a search model on a snapshot (and register it), query it,
run a query file, evaluate it against its champion and the baselines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import app, out_console, reports_errors, utc_time
from pipelines.errors import ShopMLError
from pipelines.settings import load_settings

if TYPE_CHECKING:
    from pipelines.search.model import SearchModel

search_app = typer.Typer(
    help="Search: lexical + semantic retrieval, re-ranked (docs/search.md).", no_args_is_help=True
)
app.add_typer(search_app, name="search")

ConfigOption = Annotated[
    Path | None, typer.Option(help="Pipeline config TOML; its \\[search] table is read.")
]


@search_app.command("train")
@reports_errors
def search_train_cmd(
    snapshot: Annotated[Path, typer.Option(help="Snapshot with the catalog (and judgments).")],
    config: ConfigOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Model folder (default: $SHOPML_HOME/search/<snapshot id>)."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing model folder.")
    ] = False,
    train_until: Annotated[
        str | None,
        typer.Option(
            help="Train on the log before this time (ISO 8601; default: the start of the "
            "last \\[search] holdout_days, which `search evaluate` scores)."
        ),
    ] = None,
    register: Annotated[
        bool,
        typer.Option(
            "--register", help="Also register it in MLflow as a shopml-search challenger."
        ),
    ] = False,
) -> None:
    """Index a snapshot's catalog, tune the fusion and fit the re-ranker on the query log
    (or the judgments) before the held-out part."""
    from pipelines.data.snapshot import Snapshot
    from pipelines.search.config import SearchConfig
    from pipelines.search.model import train

    cfg = SearchConfig.from_toml(config)
    snap = Snapshot.open(snapshot)
    parsed = utc_time(train_until, "--train-until")
    until = None if parsed is None else parsed.timestamp()
    settings = load_settings()
    target = out or settings.home / "search" / snap.id[:12]
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ShopMLError(f"{target} exists and is not empty; pass --overwrite to replace it")
    model = train(snapshot, cfg, until=until)
    path = model.save(target, overwrite=overwrite)
    info = model.info
    out_console.print(f"[bold green]search model[/] at {escape(str(path))}")
    out_console.print(f"  trained until {info.get('train_until') or 'the end of the snapshot'}")
    out_console.print(
        f"  {info['items']:,} items, {info['embedding']} embedding; labels: {escape(info['labels'])}"
    )
    if "first_stage_ndcg_at_10" in info:
        w = info["config"]["field_weights"]
        out_console.print(
            f"  tuned: field weights {w}, alpha {info['config']['alpha']}, image weight "
            f"{info['config']['image_weight']}; first-stage nDCG@10 "
            f"{info['first_stage_ndcg_at_10']} on the training queries"
        )
    if "ranker_rounds" in info:
        out_console.print(
            f"  re-ranker: {info['ranker_rounds']} rounds, validation nDCG@10 {info['ranker_validation_ndcg']}"
        )
    if register:
        from pipelines.registry.search import register_search

        done = register_search(model, settings=settings)
        out_console.print(f"  registered as [bold]{done.uri}[/] (alias challenger)")


def _load(model: str) -> SearchModel:
    from pipelines.registry.search import load_search

    return load_search(model, load_settings())


ModelOption = Annotated[
    str,
    typer.Option(
        help="Search model: a folder (`shopml search train`) or a registry URI "
        "(models:/shopml-search/3, models:/shopml-search@champion)."
    ),
]


@search_app.command("query")
@reports_errors
def search_query_cmd(
    text: Annotated[str, typer.Argument(help="The query.", show_default=False)],
    model: ModelOption,
    k: Annotated[int, typer.Option(min=1, max=200, help="Results to show.")] = 10,
    category: Annotated[
        str | None, typer.Option(help="Only this category (and its sub-categories).")
    ] = None,
    price_min: Annotated[float | None, typer.Option(help="Lowest price.")] = None,
    price_max: Annotated[float | None, typer.Option(help="Highest price.")] = None,
    explain: Annotated[
        bool, typer.Option("--explain", help="Say why each item is listed.")
    ] = False,
    user: Annotated[
        str | None, typer.Option(help="The shopper: their interest tags re-rank the results.")
    ] = None,
) -> None:
    """Answer one query: titles, scores, reasons, and the fallback used, if any."""
    from pipelines.search.model import FALLBACK_WORDS

    m = _load(model)
    res, c = m.search(
        text,
        k=k,
        category=category,
        price_min=price_min,
        price_max=price_max,
        explain=explain,
        user=user,
    )
    if user is not None and m.personal(user, c.items[:1]) is None:
        out_console.print(f"shopper {escape(user)} is unknown to the model: answered as anonymous")
    if c.fallback:
        said = FALLBACK_WORDS[c.fallback]
        if c.fallback == "corrected":
            said += f": '{c.corrected}'"
        out_console.print(f"[yellow]fallback {c.fallback}[/]: {escape(said)}")
    table = Table("#", "item", "title", "category", "price", "score", box=None)
    if explain:
        table.add_column("reasons")
    for r in res.itertuples(index=False):
        row = [str(r.rank), escape(str(r.item_id)), escape(str(r.title)), escape(str(r.category)),
               f"{r.price:.2f}", f"{r.score:.4f}"]  # fmt: skip
        if explain:
            row.append(escape(str(r.reasons)))
        table.add_row(*row)
    out_console.print(table)
    if res.empty:
        out_console.print("no results: the filters exclude every item")


@search_app.command("run")
@reports_errors
def search_run_cmd(
    model: ModelOption,
    queries: Annotated[
        Path, typer.Option(help="CSV or parquet with a `query` column (and optional `user_id`).")
    ],
    out: Annotated[Path, typer.Option(help="Output .csv or .parquet.")],
    k: Annotated[int, typer.Option(min=1, max=200, help="Results per query.")] = 10,
) -> None:
    """Answer a file of queries: rows query, user_id, rank, item_id, score, fallback."""
    from pipelines.search.model import run_file

    if out.suffix not in (".csv", ".parquet"):
        raise ShopMLError(f"--out {out}: use a .csv or .parquet file name")
    m = _load(model)
    res = run_file(m, queries, k=k)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".csv":
        res.to_csv(out, index=False)
    else:
        res.to_parquet(out, index=False)
    n_q = res["query"].nunique() if len(res) else 0
    out_console.print(f"{len(res):,} rows for {n_q:,} queries written to {escape(str(out))}")


@search_app.command("evaluate")
@reports_errors
def search_evaluate_cmd(
    model: ModelOption,
    snapshot: Annotated[Path, typer.Option(help="Snapshot whose held-out queries are scored.")],
    config: Annotated[
        Path | None,
        typer.Option(
            help="Pipeline config TOML; its \\[search] and \\[search_gate] tables are read."
        ),
    ] = None,
    champion: Annotated[
        str | None,
        typer.Option(help="Champion to compare with (default: models:/shopml-search@champion)."),
    ] = None,
    no_champion: Annotated[
        bool, typer.Option("--no-champion", help="Judge against the baselines only.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option(help="Folder for verdict.json, report.html, summary.md.")
    ] = None,
) -> None:
    """Score a search model on the snapshot's held-out queries (the log's last days, the
    judged evaluation share) against BM25, the unpersonalised hybrid and its champion;
    judge the search gate; write the verdict and the reviewer's report."""
    from pipelines.evaluation.search_eval import CHALLENGER, SearchEvalConfig, evaluate_search

    result = evaluate_search(
        model_uri=model,
        snapshot_uri=snapshot,
        settings=load_settings(),
        cfg=SearchEvalConfig.from_toml(config),
        champion_uri=champion,
        use_champion=not no_champion,
        out_dir=out,
    )
    es = result.eval_set.describe()
    out_console.print(
        f"{es['queries']:,} held-out queries ({es['log_queries']:,} from the log, "
        f"{es['judged_queries']:,} judged); eval set {es['hash'][:12]}"
    )
    table = Table("method", "nDCG@10", "MRR@10", "recall@10", "zero results", box=None)
    for name, values in result.values.items():
        v = values["all"]
        bold = "[bold]" if name == CHALLENGER else ""
        table.add_row(
            f"{bold}{escape(name)}", f"{v['ndcg@10']:.4f}", f"{v['mrr@10']:.4f}",
            f"{v['recall@10']:.4f}", f"{v['zero_result@10']:.2%}",
        )  # fmt: skip
    out_console.print(table)
    for outcome in result.judgement.outcomes:
        mark = {True: "[green]pass[/]", False: "[red]fail[/]", None: "[dim]skip[/]"}[outcome.passed]
        out_console.print(f"  {mark} {escape(outcome.reason)}", soft_wrap=True)
    for note in result.judgement.notes:
        out_console.print(f"  note: {escape(note)}", soft_wrap=True)
    word = "[bold green]blessed[/]" if result.blessed else "[bold red]not blessed[/]"
    out_console.print(f"{word}; report: {escape(str(result.out_dir / 'report.html'))}")
