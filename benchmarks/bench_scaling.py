"""The cost of every retrain step (wall time, peak memory) at several shop sizes in one run,
fitted as a growth curve: where one machine ends (docs/scaling.md).

Each size gets a generated shop (``events // 20`` shoppers, ``min(50,000, events // 200)``
items, seed 7) and a fresh SHOPML_HOME in the embedded profile. Every step of
`shopml_retrain` up to the review runs in its own Python process, exactly as the DAG's task
calls it (``pipelines.orchestration.steps``), one after the other, so each step's peak
resident memory is its own. A step that goes over ``--memory-cap-gb`` (its process tree's
resident memory, polled every 0.2 s) or ``--step-timeout`` is stopped and recorded as such,
and the steps that need its output are skipped; the other branch goes on.

Growth curve per step, above the fixed cost every step pays (a Python that only imports the
steps, measured first): ``CPU seconds = s0 + a * events^b`` (CPU rather than wall seconds:
the step's own work, whatever else the machine was doing) and ``peak GB = m0 + c * events^d``,
least squares on the logarithms of the sizes that completed, and from it the event count at
which the step's peak memory reaches a worker's usable memory (85 % of 24 GB and of 128 GB).
CPU seconds beside wall seconds show how much of a step uses more than one core.

    python benchmarks/bench_scaling.py [--sizes 1000000,3000000,10000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from common import write_result

REPO = Path(__file__).resolve().parents[1]

GENERATE = """
from pipelines.data.generator import GeneratorConfig, generate_shop
generate_shop(GeneratorConfig(users={users}, items={items}, events={events}, seed=7), out=Path({shop!r}))
payload = {{}}
"""
# what every step pays before it touches data: the interpreter and the steps' imports
IMPORTS = """
from pipelines.orchestration import steps
import pipelines.search.model, pipelines.evaluation.search_eval, pipelines.evaluation.evaluate
payload = {}
"""
VALIDATE = """
from pipelines.orchestration.steps import validate_step
payload = validate_step(snapshot={shop!r}, config=None, dag_run_id="scaling").to_xcom()
"""
STEP = """
from pipelines.orchestration import steps
payload = steps.{function}(steps.RunPayload.from_xcom(payload)).to_xcom()
"""
CHILD = """
import json, logging, resource, sys, time
from pathlib import Path
logging.basicConfig(level=logging.WARNING)
payload = json.loads(Path(sys.argv[1]).read_text())
_t = time.perf_counter()
{body}
_seconds = time.perf_counter() - _t
Path(sys.argv[2]).write_text(json.dumps({{
    "payload": payload, "seconds": _seconds,
    "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2,
    "cpu_seconds": sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
                       for f in ("ru_utime", "ru_stime")),
}}))
"""
# (step, the DAG task, what it needs first); validate needs the shop, the rest a payload
STEPS: list[tuple[str, str, str | None]] = [
    ("validate_snapshot", "", "generate"),
    ("build_features", "features_step", "validate_snapshot"),
    ("materialize_features", "materialize_step", "build_features"),
    ("train_candidates", "candidates_step", "build_features"),
    ("train_ranker", "ranker_step", "train_candidates"),
    ("register_challenger", "register_step", "train_ranker"),
    ("evaluate_challenger", "evaluate_step", "register_challenger"),
    ("build_search_index", "search_index_step", "validate_snapshot"),
    ("train_search_ranker", "search_ranker_step", "build_search_index"),
    ("register_search_challenger", "search_register_step", "train_search_ranker"),
    ("evaluate_search", "search_evaluate_step", "register_search_challenger"),
]
# the payload each step starts from: the recommender's steps pass theirs along; the search
# branch starts from validate's (as in the DAG)
BRANCH_START = {"build_search_index": "validate_snapshot"}
# the search re-ranker and what follows it (--search-up-to leaves them out above a size)
SEARCH_MODEL_STEPS = ("train_search_ranker", "register_search_challenger", "evaluate_search")
USABLE = 0.85  # of a worker's memory, for the operating system, page cache and the worker


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


def run_step(
    body: str,
    payload: dict[str, Any],
    folder: Path,
    env: dict[str, str],
    cap_gb: float,
    timeout: float,
) -> dict[str, Any]:
    """Run one step in a fresh Python under a memory cap and a time limit."""
    folder.mkdir(parents=True, exist_ok=True)
    given, out, log = folder / "in.json", folder / "out.json", folder / "log.txt"
    given.write_text(json.dumps(payload))
    out.unlink(missing_ok=True)
    started = time.monotonic()
    with log.open("w") as sink:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD.format(body=body), str(given), str(out)],
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True,
        )  # fmt: skip
        proc, peak, stopped = psutil.Process(child.pid), 0, ""
        while child.poll() is None:
            with contextlib.suppress(psutil.Error):
                peak = max(peak, _tree_rss(proc))
            if peak > cap_gb * 1024**3:
                stopped = f"over the memory cap ({cap_gb:g} GB)"
            elif time.monotonic() - started > timeout:
                stopped = f"over the time limit ({timeout:.0f} s)"
            if stopped:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            time.sleep(0.2)
    wall = time.monotonic() - started
    if stopped or child.returncode != 0 or not out.is_file():
        tail = log.read_text()[-1500:]
        return {
            "ok": False,
            "seconds": round(wall, 1),
            "peak_rss_gb": round(peak / 1024**3, 2),
            "error": stopped or f"exit {child.returncode}: {tail.strip().splitlines()[-1:] or ''}",
        }
    done = json.loads(out.read_text())
    return {
        "ok": True,
        "seconds": round(done["seconds"], 1),
        "peak_rss_gb": round(max(done["peak_rss_gb"], peak / 1024**3), 2),
        "cpu_seconds": round(done["cpu_seconds"], 1),
        "payload": done["payload"],
    }


def _wait_while(pause: Path | None) -> None:
    """Hold the next step while ``pause`` exists (another benchmark needs the cores)."""
    announced = False
    while pause is not None and pause.exists():
        if not announced:
            print(f"  paused while {pause} exists", flush=True)
            announced = True
        time.sleep(5)


def measure(
    events: int,
    workdir: Path,
    cap_gb: float,
    timeout: float,
    search: bool = True,
    pause: Path | None = None,
    only: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    users, items = events // 20, min(50_000, events // 200)
    root = workdir / str(events)
    shutil.rmtree(root, ignore_errors=True)
    shop, home = root / "shop", root / "home"
    env = {**os.environ, "SHOPML_HOME": str(home), "SHOPML_ENV": "embedded"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    results: dict[str, Any] = {}
    print(f"{events:,} events ({users:,} shoppers, {items:,} items)", flush=True)
    results["generate"] = run_step(
        "from pathlib import Path\n"
        + GENERATE.format(users=users, items=items, events=events, shop=str(shop)),
        {}, root / "steps" / "generate", env, cap_gb, timeout,
    )  # fmt: skip
    _show("generate", results["generate"])
    for step, function, needs in STEPS:
        before = results.get(BRANCH_START.get(step, needs or ""), {})
        if needs and not results.get(needs, {}).get("ok"):
            results[step] = {"ok": False, "skipped": f"needs {needs}"}
            _show(step, results[step])
            continue
        if only and step not in only:
            results[step] = {"ok": False, "skipped": "not asked (--steps)"}
            _show(step, results[step])
            continue
        if not search and step in SEARCH_MODEL_STEPS:
            results[step] = {"ok": False, "skipped": "above --search-up-to"}
            _show(step, results[step])
            continue
        _wait_while(pause)
        body = VALIDATE.format(shop=str(shop)) if not function else STEP.format(function=function)
        results[step] = run_step(
            body, before.get("payload", {}), root / "steps" / step, env, cap_gb, timeout
        )
        _show(step, results[step])
    for r in results.values():
        r.pop("payload", None)
    shutil.rmtree(root, ignore_errors=True)  # 10M: tens of GB
    return {"events": events, "users": users, "items": items, "steps": results}


def _show(step: str, r: dict[str, Any]) -> None:
    if r.get("skipped"):
        print(f"  {step:28} skipped ({r['skipped']})", flush=True)
    elif not r["ok"]:
        print(f"  {step:28} FAILED after {r['seconds']:.0f} s, {r['peak_rss_gb']:.1f} GB: {r['error']}", flush=True)  # fmt: skip
    else:
        print(f"  {step:28} {r['seconds']:8.1f} s  {r['peak_rss_gb']:6.2f} GB  cpu {r['cpu_seconds']:8.1f} s", flush=True)  # fmt: skip


def power_fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """(a, b) of y = a * x^b by least squares on logarithms; None below two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys, strict=True) if y > 0]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    if sxx == 0:
        return None
    b = sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx
    return math.exp(my - b * mx), b


def growth(sizes: list[dict[str, Any]], fixed: dict[str, Any]) -> dict[str, Any]:
    """Per step: exponents of its cost above the fixed cost, and where its memory runs out."""
    fits: dict[str, Any] = {}
    s0, m0 = fixed["seconds"], fixed["peak_rss_gb"]
    for step in ["generate", *(s[0] for s in STEPS)]:
        done = [(s["events"], s["steps"][step]) for s in sizes if s["steps"][step].get("ok")]
        events = [float(e) for e, _ in done]
        # CPU seconds: the step's own work, whatever else the machine was doing
        time_fit = power_fit(events, [r.get("cpu_seconds", r["seconds"]) - s0 for _, r in done])
        mem_fit = power_fit(events, [r["peak_rss_gb"] - m0 for _, r in done])
        entry: dict[str, Any] = {"sizes": [e for e, _ in done]}
        if time_fit:
            entry["seconds_exponent"] = round(time_fit[1], 2)
        if mem_fit:
            a, b = mem_fit
            entry["memory_exponent"] = round(b, 2)
            for worker_gb in (24, 128):
                at = ((USABLE * worker_gb - m0) / a) ** (1 / b) if b > 0.1 else math.inf
                reach = at < 1e11  # beyond 100 billion events the fit says nothing
                entry[f"events_at_{worker_gb}gb"] = int(round(at, -5)) if reach else None
                if reach and time_fit:
                    ta, tb = time_fit
                    entry[f"cpu_seconds_at_{worker_gb}gb"] = round(s0 + ta * at**tb)
        failed = [s["events"] for s in sizes if s["steps"][step].get("error")]
        if failed:
            entry["failed_at"] = failed
        fits[step] = entry
    return fits


def _cell(r: dict[str, Any]) -> str:
    if r.get("skipped"):
        return "–"
    if not r.get("ok"):
        return f"stopped at {r['seconds']:,.0f} s, {r['peak_rss_gb']:.1f} GB"
    return f"{r['seconds']:,.0f} s ({r['cpu_seconds']:,.0f} cpu), {r['peak_rss_gb']:.2f} GB"


def _events(at: int | None, largest: int) -> str:
    """An extrapolated event count, or how far past the measured sizes it lies."""
    if not at:
        return "–"
    if at > 100 * largest:
        return f"> {100 * largest / 1e6:,.0f}M"  # a fit says nothing that far out
    return f"{at / 1e6:,.1f}M"


def markdown(result: dict[str, Any]) -> str:
    """A results file as the tables of docs/scaling.md."""
    sizes = result["sizes"]
    head = " | ".join(f"{s['events']:,}" for s in sizes)
    lines = [f"| step | {head} |", "|---|" + "---:|" * len(sizes)]
    for step in ["generate", *(s[0] for s in STEPS)]:
        lines.append(f"| {step} | " + " | ".join(_cell(s["steps"][step]) for s in sizes) + " |")
    total = " | ".join(f"{s.get('total_seconds', 0):,.0f} s" for s in sizes)
    lines += [f"| all steps, one after the other | {total} |", ""]
    lines += [
        "| step | time ~ events^b | memory ~ events^d | events at 24 GB | events at 128 GB |",
        "|---|---:|---:|---:|---:|",
    ]
    for step, f in growth(sizes, result["fixed_cost"]).items():
        if step == "generate":  # the benchmark's own shop, not a retrain step
            continue
        at = [f.get(f"events_at_{gb}gb") for gb in (24, 128)]
        lines.append(
            f"| {step} | {f.get('seconds_exponent', '–')} | {f.get('memory_exponent', '–')} | "
            + " | ".join(_events(x, sizes[-1]["events"]) for x in at)
            + " |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,3000000,10000000")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/shopml-bench-scaling"))
    parser.add_argument("--memory-cap-gb", type=float, default=20.0)
    parser.add_argument("--step-timeout", type=float, default=3600.0)
    parser.add_argument(
        "--search-up-to",
        type=int,
        default=0,
        help="fit the search re-ranker only at sizes up to this many events (0: all)",
    )
    parser.add_argument(
        "--pause-file",
        type=Path,
        default=None,
        help="hold each next step while this file exists",
    )
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--steps",
        default="",
        help="only these steps (comma-separated; the ones they need must be listed too)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=None,
        help="only print this results file as docs/scaling.md's tables",
    )
    args = parser.parse_args()
    if args.markdown is not None:
        print(markdown(json.loads(args.markdown.read_text())))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    measured: list[dict[str, Any]] = []
    env = {**os.environ, "SHOPML_HOME": str(args.workdir / "fixed"), "SHOPML_ENV": "embedded"}
    fixed = run_step(
        IMPORTS, {}, args.workdir / "fixed", env, args.memory_cap_gb, args.step_timeout
    )
    if not fixed["ok"]:
        raise SystemExit(f"importing the steps failed: {fixed['error']}")
    fixed.pop("payload")
    _show("fixed cost (imports)", fixed)
    command = (
        f"python benchmarks/bench_scaling.py --sizes {args.sizes}"
        + (f" --search-up-to {args.search_up_to}" if args.search_up_to else "")
        + (f" --steps {args.steps}" if args.steps else "")
        + (f" --step-timeout {args.step_timeout:g}" if args.step_timeout != 3600 else "")
        + (f" --memory-cap-gb {args.memory_cap_gb:g}" if args.memory_cap_gb != 20 else "")
    )
    for events in sizes:
        t0 = time.monotonic()
        search = not args.search_up_to or events <= args.search_up_to
        measured.append(
            measure(
                events,
                args.workdir,
                args.memory_cap_gb,
                args.step_timeout,
                search,
                args.pause_file,
                frozenset(filter(None, args.steps.split(","))),
            )
        )
        measured[-1]["total_seconds"] = round(time.monotonic() - t0, 1)
        fits = growth(measured, fixed)
        path = write_result(  # after each size: a long run keeps what it measured
            "scaling",
            command,
            {
                "memory_cap_gb": args.memory_cap_gb,
                "usable_share": USABLE,
                "fixed_cost": fixed,
                "sizes": measured,
                "growth": fits,
            },
            args.out,
        )
        print(f"results written to {path}", flush=True)
    print(
        "\nstep                          time ~ events^b  memory ~ events^d  runs out at 24 GB / 128 GB"
    )
    for step, f in growth(measured, fixed).items():
        print(
            f"  {step:28} {f.get('seconds_exponent', '-')!s:>8} {f.get('memory_exponent', '-')!s:>16}"
            f"   {f.get('events_at_24gb') or '-'!s:>12} / {f.get('events_at_128gb') or '-'!s}"
        )


if __name__ == "__main__":
    main()
