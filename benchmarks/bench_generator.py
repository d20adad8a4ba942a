"""Generator speed and memory: `shopml data generate` at 1M and 10M events.

Targets (issue "Foundation"): 1M events <= 60 s; 10M events <= 10 min with peak memory
<= 4 GB, on 2 cores. Each size runs in a fresh process that reports its own peak RSS.
As a same-run baseline, the I/O floor writes the same number of random event rows in
the contract schema (id formatting + parquet), so the ratio generator / floor is
comparable across noisy machines.

    python benchmarks/bench_generator.py [--sizes 1000000,10000000] [--out benchmarks/results/generator.json]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import write_result

# Catalog and shoppers grow with the log: 1M events -> 50k users / 10k items, 10M -> 500k / 50k.
SHAPES = {1_000_000: (50_000, 10_000), 10_000_000: (500_000, 50_000)}
TARGETS = {1_000_000: {"seconds": 60.0}, 10_000_000: {"seconds": 600.0, "peak_rss_gb": 4.0}}


def _child_generate(events: int, out: str) -> None:
    from pipelines.data.generator import GeneratorConfig, generate_shop

    users, items = SHAPES.get(events, (max(events // 20, 1000), max(events // 100, 200)))
    started = time.perf_counter()
    result = generate_shop(
        GeneratorConfig(users=users, items=items, events=events, seed=42), out=out
    )
    seconds = time.perf_counter() - started
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_gb": peak_gb,
                "rows": result.rows,
                "users": users,
                "items": items,
            }
        )
    )


def _child_floor(events: int, out: str) -> None:
    """Write `events` random rows in the events schema: the cost no generator can avoid."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.data.contract import EVENT_TYPES, TS, schema
    from pipelines.data.generator.ids import format_ids

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    writer = pq.ParquetWriter(out, schema("events"), compression="zstd")
    chunk = 1_000_000
    for lo in range(0, events, chunk):
        n = min(chunk, events - lo)
        qty = rng.integers(0, 3, n)
        writer.write_table(
            pa.table(
                {
                    "event_id": format_ids("e", lo + np.arange(n), width=len(str(events))),
                    "user_id": format_ids("u", rng.integers(0, 500_000, n), width=6),
                    "item_id": format_ids("i", rng.integers(0, 50_000, n), width=5),
                    "event_type": pa.array(EVENT_TYPES).take(pa.array(rng.integers(0, 4, n))),
                    "ts": pa.array(
                        np.sort(rng.integers(1_767_225_600, 1_775_001_600, n)) * 1_000_000
                    ).cast(TS),
                    "session_id": format_ids("s", rng.integers(0, events // 4, n)),
                    "query_id": pa.nulls(n, pa.string()),
                    "quantity": pa.array(qty, type=pa.int32(), mask=qty == 0),
                    "value": pa.array(rng.random(n) * 100, mask=qty == 0),
                },
                schema=schema("events"),
            )
        )
    writer.close()
    print(json.dumps({"seconds": time.perf_counter() - started}))


def _run_child(kind: str, events: int, out: str) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", kind, "--events", str(events), "--child-out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run for {events:,} events failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "generator.json"))
    parser.add_argument("--child", choices=["generate", "floor"], help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "generate":
        return _child_generate(args.events, args.child_out)
    if args.child == "floor":
        return _child_floor(args.events, args.child_out)

    runs = []
    for events in (int(s) for s in args.sizes.split(",")):
        work = Path(tempfile.mkdtemp(prefix="shopml-bench-"))
        try:
            floor = _run_child("floor", events, str(work / "floor.parquet"))
            gen = _run_child("generate", events, str(work / "shop"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        target = TARGETS.get(events, {})
        run = {
            "events": events,
            "users": gen["users"],
            "items": gen["items"],
            "rows": gen["rows"],
            "seconds": round(float(gen["seconds"]), 2),
            "events_per_second": round(events / float(gen["seconds"])),
            "peak_rss_gb": round(float(gen["peak_rss_gb"]), 2),
            "io_floor_seconds": round(float(floor["seconds"]), 2),
            "ratio_to_io_floor": round(float(gen["seconds"]) / float(floor["seconds"]), 2),
            "target": target,
            "meets_target": all(float(gen[k]) <= v for k, v in target.items()),
        }
        runs.append(run)
        print(
            f"{events:>11,} events ({run['users']:,} users, {run['items']:,} items): {run['seconds']:.1f} s "
            f"({run['events_per_second']:,}/s), peak {run['peak_rss_gb']:.2f} GB, "
            f"{run['ratio_to_io_floor']:.2f}x the I/O floor ({run['io_floor_seconds']:.1f} s); "
            f"target {target or '-'}: {'met' if run['meets_target'] else 'MISSED'}"
        )
    path = write_result(
        "generator",
        "python benchmarks/bench_generator.py --sizes " + args.sizes,
        {"runs": runs},
        Path(args.out),
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
