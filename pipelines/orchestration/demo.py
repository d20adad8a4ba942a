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
import itertools
import json
import logging
import os
import sys
import threading
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from pipelines.data.generator import GeneratorConfig, generate_shop
from pipelines.errors import ShopMLError
from pipelines.orchestration.airflow_api import RETRAIN_DAG, AirflowClient
from pipelines.orchestration.stack import Serving, start, start_serving, stop
from pipelines.orchestration.steps import work_folder
from pipelines.promotion.promote import ledger_entries, served_version
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
        folder = work_folder(settings, run_id)
        verdict = folder / VERDICTS[task] / "verdict.json" if folder else None
        if verdict and verdict.is_file():
            for reason in json.loads(verdict.read_text())["reasons"]:
                console.print(f"  {reason}", soft_wrap=True)
    return {
        "run_id": run_id,
        "promoted": {t: states.get(p) == "success" for t, p in REVIEWS.items()},
    }


class Traffic:
    """Requests in a loop against the serving API while a retrain promotes new versions:
    (endpoint, status, model version) of each answer."""

    def __init__(self, serving: Serving, user: str, query: str) -> None:
        self.serving, self.user, self.query = serving, user, query
        self.seen: list[tuple[str, int, int | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        urls = {"recommendations": f"/v1/recommendations/{self.user}?k=5",
                "search": f"/v1/search?q={self.query}&k=5"}  # fmt: skip
        with httpx.Client(
            base_url=self.serving.url, headers={"X-API-Key": self.serving.key()}, timeout=10
        ) as c:
            while not self._stop.is_set():
                for name, url in urls.items():
                    try:
                        r = c.get(url)
                        self.seen.append((name, r.status_code, r.json().get("version")))
                    except (httpx.HTTPError, ValueError):
                        self.seen.append((name, 0, None))
                time.sleep(0.1)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    def report(self) -> None:
        failed = [s for s in self.seen if s[1] != 200]
        say(f"requests while the retrain ran: {len(self.seen):,}, failed: {len(failed)}")
        for name in ("recommendations", "search"):
            versions = [v for n, code, v in self.seen if n == name and code == 200]
            changes = (
                [versions[0]] + [b for a, b in itertools.pairwise(versions) if a != b]
                if versions
                else []
            )
            say(f"  {name}: versions served in order {changes} ({len(versions):,} answers)")


def _api(serving: Serving, scope: str = "client") -> httpx.Client:
    return httpx.Client(base_url=serving.url, headers={"X-API-Key": serving.key(scope)}, timeout=30)


def _wait_served(serving: Serving, versions: dict[str, int | None], timeout: float = 120) -> None:
    """Until the API serves ``versions`` (model -> version; None: not promoted)."""
    want = {m: v for m, v in versions.items() if v is not None}
    deadline = time.monotonic() + timeout
    with _api(serving) as c:
        while time.monotonic() < deadline:
            r = c.get("/readyz")
            served = {
                m: (e.get("served") or {}).get("version") for m, e in r.json()["models"].items()
            }
            if r.status_code == 200 and all(served.get(m) == v for m, v in want.items()):
                return
            time.sleep(0.5)
    raise ShopMLError(
        f"the serving API does not serve {want} after {timeout:.0f} s; see {serving.log}"
    )


def _shopper_and_query(snapshot: Path) -> tuple[str, str]:
    """The shopper who searched most in the snapshot, and their last query."""
    from pipelines.data.snapshot import Snapshot

    queries = Snapshot.open(snapshot).read("queries", columns=["user_id", "text"]).to_pandas()
    user = str(queries["user_id"].value_counts().index[0])
    return user, str(queries[queries["user_id"] == user]["text"].iloc[-1])


def _show(title: str, answer: dict[str, Any]) -> None:
    say(
        f"{title} — {answer.get('model')} version {answer.get('version')}, request {answer.get('request_id')}"
    )
    if answer.get("fallback"):
        console.print(
            f"  fallback: {answer['fallback']} ({answer.get('fallback_reason')})", soft_wrap=True
        )
    for it in answer.get("items", []):
        reasons = f": {it['reasons']}" if it.get("reasons") else ""
        console.print(
            f"  #{it['rank']} {it['item_id']} {it['title']} ({it['category']}, {it['price']}){reasons}",
            soft_wrap=True,
        )


def tour(serving: Serving, snapshot: Path) -> None:
    """Every endpoint of the serving API once, with the answers."""
    user, query = _shopper_and_query(snapshot)
    with _api(serving) as c:
        say(f"the serving API at {serving.url} (key from {serving.client_key_file}):")
        for m in c.get("/v1/models").json()["models"]:
            say(
                f"  GET /v1/models: {m['model']} version {m['version']} (snapshot {str(m['snapshot_id'])[:12]}, serving since {m['loaded_at']})"
            )
        rec = c.get(f"/v1/recommendations/{user}", params={"k": 5, "explain": "true"}).json()
        _show(f"GET /v1/recommendations/{user}?k=5&explain=true (a returning shopper)", rec)
        body = {"session_id": "demo-visitor", "age": 34, "gender": "F", "k": 5, "explain": True,
                "recent_items": [rec["items"][0]["item_id"]]}  # fmt: skip
        _show(
            f"POST /v1/recommendations {json.dumps(body)} (a new visitor)",
            c.post("/v1/recommendations", json=body).json(),
        )
        search = c.get(
            "/v1/search", params={"q": query, "user_id": user, "k": 5, "explain": "true"}
        ).json()
        _show(
            f"GET /v1/search?q={query}&user_id={user} (personal: {search.get('personal')})", search
        )
        _show(
            f"GET /v1/search?q={query} (an anonymous shopper)",
            c.get("/v1/search", params={"q": query, "k": 5, "explain": "true"}).json(),
        )
        item = rec["items"][0]["item_id"]
        _show(
            f"GET /v1/items/{item}/similar?k=5",
            c.get(f"/v1/items/{item}/similar", params={"k": 5, "explain": "true"}).json(),
        )
        events = [
            {"type": "impression", "user_id": user, "item_id": it["item_id"], "request_id": search["request_id"], "position": it["rank"]}
            for it in search["items"][:3]
        ] + [{"type": "click", "user_id": user, "item_id": search["items"][0]["item_id"], "request_id": search["request_id"], "position": 1}]  # fmt: skip
        r = c.post("/v1/events", json={"events": events})
        say(
            f"POST /v1/events (3 impressions and a click on the search answer): {r.status_code} {r.json()}"
        )
        r = c.get("/v1/search", params={"q": "x" * 600})
        say(f"GET /v1/search?q=<600 characters>: {r.status_code} {r.json()['message']}")
        ready = c.get("/readyz").json()
        say(f"GET /readyz: ready {ready['ready']}")
        lines = [
            x for x in c.get("/metrics").text.splitlines() if x.startswith("shopml_requests_total")
        ]
        say("GET /metrics (requests by endpoint and status):")
        for line in lines[:8]:
            console.print(f"  {line}", soft_wrap=True)


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
        first_run = _retrain(engineer, reviewer, settings, first, "first model")
        serving_port = int(os.environ.get("SHOPML_SERVING_PORT", "8000"))
        say(
            f"starting the serving API (shopml serve) on port {serving_port}; it polls the bucket every 2 s"
        )
        serving = start_serving(settings, port=serving_port, poll_seconds=2)
        _wait_served(serving, {m: served_version(settings, m) for m in (MODEL_NAME, SEARCH_MODEL)})
        del first_run
        user, query = _shopper_and_query(second)
        say("retraining on the newer snapshot while shoppers keep asking the serving API:")
        with Traffic(serving, user, query) as traffic:
            _retrain(engineer, reviewer, settings, second, "newer snapshot, challenger vs champion")
            _wait_served(
                serving, {m: served_version(settings, m) for m in (MODEL_NAME, SEARCH_MODEL)}
            )
            time.sleep(1)
        traffic.report()
        for name in (MODEL_NAME, SEARCH_MODEL):
            say(f"the promotion ledger of {name} (shopml promotions log --model {name}):")
            for line in ledger_entries(settings, name):
                console.print(f"  {json.dumps(line)}", soft_wrap=True)
        tour(serving, second)
        say(
            f"preview page (log in with any name and the admin key in {serving.admin_key_file}): {serving.url}/preview"
        )
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
            serving = start_serving(
                settings, port=int(os.environ.get("SHOPML_SERVING_PORT", "8000"))
            )
            say(f"the serving API is up at {serving.url} (docs {serving.url}/docs); client key "
                f"{serving.key()} (in {serving.client_key_file}); preview {serving.url}/preview "
                f"(any user name, the admin key in {serving.admin_key_file} as password); "
                f"log {serving.log}")  # fmt: skip
        else:
            say(f"stopped: {', '.join(stop(load_settings())) or 'nothing was running'}")
    except ShopMLError as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
