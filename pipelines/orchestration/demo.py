"""``make demo``: the whole platform on one machine, narrated.

Starts the embedded stack (Airflow on SQLite with the LocalExecutor, MLflow on SQLite, a
local serving bucket), generates a shop, triggers ``shopml_retrain`` through Airflow's REST
API, approves the recommender and the search model as the demo reviewer (each has its own
approval request), waits for the promotions, retrains on a newer snapshot to show champion
vs challenger, then prints both ledgers, recommendations from the served recommender for a
returning and a new shopper, a search by the served search model for a returning and an
anonymous shopper, and where to open the UIs. ``make up`` starts
the same stack and leaves it running (``python -m pipelines.orchestration.demo up``; ``down`` stops it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.errors import ShopMLError
from pipelines.orchestration.airflow_api import RETRAIN_DAG, AirflowClient
from pipelines.orchestration.stack import start, stop
from pipelines.orchestration.steps import work_dir
from pipelines.promotion import layout
from pipelines.promotion.bucket import LocalBucket, open_bucket
from pipelines.promotion.promote import ledger_entries, served_version
from pipelines.recommender.bundle import Recommender
from pipelines.recommender.predict import RecommendRequest
from pipelines.registry.models import MODEL_NAME
from pipelines.registry.search import SEARCH_MODEL
from pipelines.settings import Settings, load_settings, redact

console = Console()
REVIEWER = "reviewer"
# The review is answered after the task has fully paused: an answer within a second of
# the pause can race Airflow 3.3's executor (see docs/operations.md).
SETTLE_SECONDS = 8
# each model's approval task and the task that promotes it
REVIEWS = {"await_review": "promote_model", "await_search_review": "promote_search"}
VERDICTS = {"await_review": "evaluation", "await_search_review": "search/evaluation"}


def say(text: str) -> None:
    console.print(f"[bold cyan]demo[/] {text}", soft_wrap=True)


def _wait(
    api: AirflowClient, run_id: str, seen: set[str], *, reviews: set[str], timeout: float = 1500
) -> dict[str, Any]:
    """Poll the run, printing each task as it finishes; stop when one of ``reviews``
    awaits an answer, or at the end."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = api.task_states(RETRAIN_DAG, run_id)
        for task, state in states.items():
            if state in ("success", "failed", "skipped", "upstream_failed") and task not in seen:
                seen.add(task)
                say(f"  {task}: {state}")
        run = api.dag_run(RETRAIN_DAG, run_id)
        waiting = [t for t in reviews if states.get(t) == "awaiting_input"]
        if waiting:
            time.sleep(SETTLE_SECONDS)
            return {"run": run, "states": states, "waiting": waiting}
        if run["state"] in ("success", "failed"):
            return {"run": run, "states": states, "waiting": []}
        time.sleep(3)
    raise ShopMLError(f"shopml_retrain run {run_id} did not finish within {timeout:.0f} s")


def _retrain(
    engineer: AirflowClient,
    reviewer: AirflowClient,
    settings: Settings,
    snapshot: Path,
    label: str,
) -> dict[str, Any]:
    say(f"triggering shopml_retrain on {snapshot.name} ({label}) as 'engineer': "
        f"POST /api/v2/dags/shopml_retrain/dagRuns with conf {{'snapshot': '{snapshot}'}}")  # fmt: skip
    run_id = engineer.trigger(RETRAIN_DAG, {"snapshot": str(snapshot), "config": ""})["dag_run_id"]
    seen: set[str] = set()
    left = set(REVIEWS)
    while True:
        result = _wait(engineer, run_id, seen, reviews=left)
        if not result["waiting"]:
            break
        for task in result["waiting"]:
            (detail,) = [
                d
                for d in reviewer.pending_reviews()
                if d["task_instance"]["dag_run_id"] == run_id
                and d["task_instance"]["task_id"] == task
            ]
            say(f"approval request ({task}) for '{REVIEWER}': {detail['subject']}")
            console.print(detail["body"], soft_wrap=True)
            say(f"approving as '{REVIEWER}' (the configured demo reviewer; only assigned reviewers may answer): "
                f"PATCH {reviewer.review_path(run_id, task_id=task)} with chosen_options ['Approve']")  # fmt: skip
            reviewer.answer(run_id, True, f"demo: {label}", task_id=task)
            left.discard(task)
    states = result["states"]
    say(f"run {run_id}: {result['run']['state']}")
    for task in sorted(left):  # never asked: the gate did not bless that challenger
        say(
            f"{task} was not asked ({states.get(task) or 'not reached'}): the gate did not bless "
            "that challenger, so its champion stays. The verdict's reasons:"
        )
        verdict = work_dir(settings, run_id) / VERDICTS[task] / "verdict.json"
        if verdict.is_file():
            for reason in json.loads(verdict.read_text())["reasons"]:
                console.print(f"  {reason}", soft_wrap=True)
    return {
        "run_id": run_id,
        "promoted": {t: states.get(p) == "success" for t, p in REVIEWS.items()},
    }


def _recommendations(settings: Settings) -> None:
    version = served_version(settings, MODEL_NAME)
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    if version is None or not isinstance(bucket, LocalBucket):
        return
    rec = Recommender.load(bucket.root / layout.version_key(MODEL_NAME, version, layout.BUNDLE))
    returning = str(rec.ctx.user_ids[int(rec.ctx.history.user_events.argmax())])
    out = rec.recommend(
        RecommendRequest(
            [returning, "new-visitor"],
            5,
            explain=True,
            age=[float("nan"), 34.0],
            gender=[None, "F"],
        )
    )
    say(f"recommendations from the served version {version} (read from the bucket):")
    for row in out.itertuples():
        kind = "returning" if row.user_id == returning else "new visitor, 34, F"
        console.print(
            f"  {row.user_id} ({kind}) #{row.rank} {row.item_id} {row.title} ({row.category}): {row.reasons}",
            soft_wrap=True,
        )


def _search(settings: Settings, snapshot: Path) -> None:
    """A query for a returning shopper and an anonymous one, answered by the served
    search model (read from the bucket)."""
    version = served_version(settings, SEARCH_MODEL)
    bucket = open_bucket(settings.serving_bucket_uri, settings.s3_endpoint_url)
    if version is None or not isinstance(bucket, LocalBucket):
        say("no search model is served (its gate or review stopped it)")
        return
    from pipelines.search.model import SearchModel

    model = SearchModel.load(bucket.root / layout.version_key(SEARCH_MODEL, version, layout.BUNDLE))
    say(f"search by the served shopml-search version {version} (read from the bucket):")
    show_search(model, snapshot)


def show_search(model: Any, snapshot: Path) -> None:
    """One query of the snapshot's log, for the shopper who searched most and for an
    anonymous shopper, with reasons."""
    from pipelines.data.snapshot import Snapshot

    queries = Snapshot.open(snapshot).read("queries", columns=["user_id", "text"]).to_pandas()
    shoppers = list(model.profiles.user_row) if model.profiles is not None else []
    known = queries[queries["user_id"].isin(shoppers)]
    if known.empty:
        say("  the snapshot's query log names no shopper the model knows: nothing to show")
        return
    user = str(known["user_id"].value_counts().index[0])
    text = str(known[known["user_id"] == user]["text"].iloc[-1])
    for who, label in ((user, f"returning shopper {user}"), (None, "anonymous shopper")):
        res, c = model.search(text, k=3, explain=True, user=who)
        note = f" (fallback: {c.fallback})" if c.fallback else ""
        say(f"search '{text}' for the {label}{note}:")
        for row in res.itertuples():
            console.print(
                f"  #{row.rank} {row.item_id} {row.title} ({row.category}, {row.price:.2f}): {row.reasons}",
                soft_wrap=True,
            )


def run_demo(port: int) -> None:
    started = time.monotonic()
    settings = load_settings()
    stop(settings)  # a stack left over from an interrupted demo
    first = settings.snapshots_dir / "demo-1"
    second = settings.snapshots_dir / "demo-2"
    base = GeneratorConfig()
    say(
        f"generating the default shop ({base.users:,} shoppers, {base.items:,} items, {base.events:,} events, {base.days} days) into {first}"
    )
    generate_shop(base, out=first, overwrite=True)
    newer = replace(base, start=base.start + timedelta(days=14))
    say(f"and a newer snapshot, two weeks later, into {second} (for the second retrain)")
    generate_shop(newer, out=second, overwrite=True)
    say(
        f"starting Airflow (scheduler, API server, DAG processor, triggerer; SQLite, LocalExecutor) on port {port}"
    )
    stack = start(settings, port=port, reviewers=REVIEWER)
    try:
        engineer = AirflowClient(stack.url, "engineer", stack.passwords["engineer"])
        reviewer = AirflowClient(stack.url, REVIEWER, stack.passwords[REVIEWER])
        _retrain(engineer, reviewer, settings, first, "first model")
        _retrain(engineer, reviewer, settings, second, "newer snapshot, challenger vs champion")
        for name in (MODEL_NAME, SEARCH_MODEL):
            say(f"the promotion ledger of {name} (shopml promotions log --model {name}):")
            for line in ledger_entries(settings, name):
                console.print(f"  {json.dumps(line)}", soft_wrap=True)
        _recommendations(settings)
        _search(settings, second)
    finally:
        stop(settings)
    say(f"done in {time.monotonic() - started:.0f} s. To click through: `make up`, then open {stack.url} "
        f"(users and passwords in {settings.airflow_home / 'passwords.json'}); MLflow UI: "
        f"`.venv/bin/mlflow ui --backend-store-uri {redact(settings.mlflow_tracking_uri)}` then http://127.0.0.1:5000")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipelines.orchestration.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("action", choices=["demo", "up", "down"], nargs="?", default="demo")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("SHOPML_AIRFLOW_PORT", "8080"))
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.action == "demo":
            run_demo(args.port)
        elif args.action == "up":
            settings = load_settings()
            stop(settings)
            reviewers = os.environ.get("SHOPML_REVIEWERS", REVIEWER)
            stack = start(settings, port=args.port, reviewers=reviewers)
            say(f"Airflow is up at {stack.url} (logins: {', '.join(stack.passwords)}; passwords in "
                f"{stack.airflow_home / 'passwords.json'}); `make down` stops it")  # fmt: skip
        else:
            say(f"stopped: {', '.join(stop(load_settings())) or 'nothing was running'}")
    except ShopMLError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
