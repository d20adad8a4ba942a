"""The engineer's and reviewer's commands: settings, reviews, promotions, rollback, DAG runs."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from pipelines.cli.app import (
    UserOption,
    app,
    out_console,
    reports_errors,
)
from pipelines.errors import ShopMLError
from pipelines.io import resolved
from pipelines.settings import load_settings


@app.command("config")
@reports_errors
def config_cmd() -> None:
    """Print the settings in effect (SHOPML_ENV, SHOPML_HOME, service URIs)."""
    table = Table("setting", "value", box=None)
    for key, value in load_settings().describe().items():
        table.add_row(key, value)
    out_console.print(table)


review_app = typer.Typer(
    help="Review pending challengers (through Airflow's REST API).", no_args_is_help=True
)
promotions_app = typer.Typer(
    help="The promotion ledger of the serving bucket.", no_args_is_help=True
)


class ServedModel(StrEnum):
    recommender = "shopml-recommender"
    search = "shopml-search"


ModelOption = Annotated[
    ServedModel, typer.Option("--model", help="Which served model.", case_sensitive=False)
]
dags_app = typer.Typer(help="Trigger ShopML's Airflow DAGs.", no_args_is_help=True)
app.add_typer(review_app, name="review")
app.add_typer(promotions_app, name="promotions")
app.add_typer(dags_app, name="dags")


def review_task(model: ServedModel) -> str:
    """The approval task of ``model`` in the retrain DAG (promotion's own table)."""
    from pipelines.promotion.promote import REVIEW_TASKS

    return REVIEW_TASKS[model.value]


def _airflow(user: str) -> Any:
    import os
    import sys

    from pipelines.orchestration.airflow_api import AirflowClient

    password = os.environ.get("SHOPML_AIRFLOW_PASSWORD")
    if not password:
        if not sys.stdin.isatty():
            raise ShopMLError(
                f"no password for Airflow login {user!r}: set SHOPML_AIRFLOW_PASSWORD (there "
                "is no terminal to ask on)"
            )
        password = typer.prompt(f"Airflow password for {user}", hide_input=True)
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
        model = "shopml-search" if ti.get("task_id") == review_task(ServedModel.search) else ""
        flag = f" (--model {model})" if model else ""
        out_console.print(
            f"[bold]{escape(str(ti.get('dag_run_id', '')))}[/]{flag}  {escape(d['subject'])}  "
            f"(asked {d['created_at']}; reviewers: {escape(who) or 'anyone'})",
            soft_wrap=True,
        )
        out_console.print(escape(d.get("body") or ""), soft_wrap=True)


def _answer(run_id: str, approve: bool, comment: str, user: str, served: ServedModel) -> None:
    model = served.value
    result = _airflow(user).answer(run_id, approve, comment, review_task(served))
    word = "approved" if approve else "rejected"
    by = (result.get("responded_by_user") or {}).get("name", user)
    out_console.print(f"[bold]{word}[/] {model} in {escape(run_id)} as {escape(str(by))}")


@review_app.command("approve")
@reports_errors
def review_approve_cmd(
    dag_run: Annotated[str, typer.Argument(help="The retrain DAG run id (see `review list`).")],
    user: UserOption,
    comment: Annotated[str, typer.Option(help="Recorded in the ledger.")] = "",
    model: ModelOption = ServedModel.recommender,
) -> None:
    """Approve a challenger: the DAG promotes it."""
    _answer(dag_run, True, comment, user, model)


@review_app.command("reject")
@reports_errors
def review_reject_cmd(
    dag_run: Annotated[str, typer.Argument(help="The retrain DAG run id (see `review list`).")],
    user: UserOption,
    comment: Annotated[str, typer.Option(help="Why.")] = "",
    model: ModelOption = ServedModel.recommender,
) -> None:
    """Reject a challenger: the champion stays."""
    _answer(dag_run, False, comment, user, model)


@promotions_app.command("log")
@reports_errors
def promotions_log_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    model: ModelOption = ServedModel.recommender,
) -> None:
    """Every promotion and rollback, oldest first, from the serving bucket's ledger."""
    from pipelines.promotion.promote import ledger_entries

    entries = ledger_entries(load_settings(), model.value)
    if as_json:
        for entry in entries:
            typer.echo(json.dumps(entry, sort_keys=True))
        return
    if not entries:
        out_console.print("no promotions yet")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("#", "time (UTC)", "action", "ver", "prev", "by"):
        table.add_column(col, no_wrap=True)
    table.add_column("note", overflow="ellipsis", no_wrap=True, max_width=24)
    for e in entries:
        table.add_row(
            str(e["seq"]), str(e.get("time") or "")[:16].replace("T", " "), e["action"],
            str(e["version"]), str(e.get("previous_version") or "–"),
            escape(str(e.get("approved_by") or e.get("requested_by") or "")),
            escape(str(e.get("reason") or e.get("comment") or "")),
        )  # fmt: skip
    out_console.print(table)


@promotions_app.command("verify")
@reports_errors
def promotions_verify_cmd(model: ModelOption = ServedModel.recommender) -> None:
    """Check the ledger's chain, current.json and every promoted version's files (exit 1 when
    anything is damaged)."""
    from pipelines.promotion.promote import verify

    state = verify(load_settings(), model.value)
    served = "nothing" if state.pointer is None else f"version {state.pointer['version']}"
    out_console.print(
        f"{model.value}: {len(state.entries)} ledger entries, {served} served, "
        f"versions checked: {', '.join(map(str, state.checked_versions)) or 'none'}"
    )
    if state.ok:
        out_console.print("[bold green]intact[/]: the chain, the pointer and every file verify")
        return
    for problem in state.problems:
        out_console.print(f"  [red]{problem.kind}[/] {escape(problem.message)}", soft_wrap=True)
    raise typer.Exit(code=1)


@app.command("promote")
@reports_errors
def promote_cmd(
    version: Annotated[int, typer.Option(help="Model version to serve.")],
    dag_run: Annotated[
        str,
        typer.Option(
            help="The shopml_retrain run whose approval and evaluation promote it (its "
            "approval record is read from Airflow)."
        ),
    ],
    user: UserOption,
    model: ModelOption = ServedModel.recommender,
) -> None:
    """Serve a version that a retrain run evaluated and a reviewer approved (the DAG's
    promote_model / promote_search step, by hand: for a run whose promotion failed)."""
    from pipelines.promotion.promote import promote

    settings = load_settings()
    review = _airflow(user).review(dag_run, task_id=review_task(model))
    out = promote(version=version, settings=settings, review=review, name=model.value)
    state = "promoted" if out.changed else "already served:"
    out_console.print(f"[bold green]{state}[/] version {out.version} (previous {out.previous})")


@app.command("rollback")
@reports_errors
def rollback_cmd(
    to: Annotated[int, typer.Option("--to", help="An earlier promoted version.")],
    reason: Annotated[str, typer.Option(help="Why (goes to the ledger).")],
    user: UserOption,
    model: ModelOption = ServedModel.recommender,
) -> None:
    """Serve an earlier version again (triggers the shopml_rollback DAG)."""
    from pipelines.orchestration.airflow_api import ROLLBACK_DAG

    if len(reason.strip()) < 3:
        raise ShopMLError("--reason: say why (at least 3 characters)")
    from pipelines.promotion.promote import ledger_entries

    entries = ledger_entries(load_settings(), model.value)
    promoted = sorted({e["version"] for e in entries if e["action"] == "promote"})
    if to not in promoted:
        raise ShopMLError(
            f"--to {to}: version {to} was never promoted (promoted: "
            f"{', '.join(map(str, promoted)) or 'none'}); nothing triggered"
        )
    run = _airflow(user).trigger(
        ROLLBACK_DAG, {"version": to, "reason": reason, "model": model.value}
    )
    out_console.print(
        f"triggered {ROLLBACK_DAG} run {escape(run['dag_run_id'])} to serve {model.value} "
        f"version {to}"
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
    # refused here, not by a run that fails later: a missing snapshot or a broken config
    if snapshot:
        from pipelines.data.snapshot import Snapshot

        snapshot = str(Snapshot.open(snapshot).path)
    if config:
        from pipelines.orchestration.config import PipelineConfig

        PipelineConfig.from_toml(config)
        config = str(resolved(config))
    run = _airflow(user).trigger(RETRAIN_DAG, {"snapshot": snapshot, "config": config})
    out_console.print(f"triggered {RETRAIN_DAG} run {escape(run['dag_run_id'])}")
