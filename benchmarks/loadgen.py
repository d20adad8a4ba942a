"""An open-loop HTTP load generator: requests at a fixed rate, whatever the answers do.

Request ``i`` is due at ``start + i / rate``; its latency counts from that moment, not
from when it was sent, so a slow server cannot hide its queue (no coordinated omission).
Runs in its own process (``python benchmarks/loadgen.py ...``) and prints one JSON line:
requests, errors by status, achieved rate, latency percentiles in ms.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 --key KEY --paths FILE --rate 300 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np


async def run(
    url: str, key: str, paths: list[str], rate: float, seconds: float, connections: int
) -> dict:
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(
        base_url=url, headers={"X-API-Key": key}, limits=limits, timeout=30
    ) as client:
        start = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                r = await client.get(paths[i % len(paths)])
                statuses[str(r.status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1
            latencies[i] = time.perf_counter() - due

        await asyncio.gather(*(one(i) for i in range(total)))
        elapsed = time.perf_counter() - start
    ms = latencies[~np.isnan(latencies)] * 1000
    ok = statuses.get("200", 0)
    return {
        "target_rate": rate,
        "seconds": seconds,
        "requests": total,
        "ok": ok,
        "errors": {k: v for k, v in statuses.items() if k != "200"},
        "achieved_rate": round(total / elapsed, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument(
        "--paths", type=Path, required=True, help="one request path per line, used in turn"
    )
    p.add_argument("--rate", type=float, required=True, help="requests per second")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--connections", type=int, default=32)
    a = p.parse_args()
    paths = [line for line in a.paths.read_text().splitlines() if line]
    print(json.dumps(asyncio.run(run(a.url, a.key, paths, a.rate, a.seconds, a.connections))))


if __name__ == "__main__":
    main()
