"""An open-loop HTTP load generator: requests at a fixed rate, whatever the answers do.

Request ``i`` is due at ``start + i / rate``; its latency counts from that moment, not
from when it was sent, so a slow server cannot hide its queue (no coordinated omission).
Runs in its own process (``python benchmarks/loadgen.py ...``) and prints one JSON line:
requests, errors by status, achieved rate, latency percentiles in ms.

It speaks HTTP/1.1 itself over a pool of keep-alive connections (asyncio streams): on 2
cores the load generator shares the machine with the server, and a general-purpose client
costs several times more CPU per request than this (about 1.6 ms with httpx), which the
server would lose.

    python benchmarks/loadgen.py --url http://127.0.0.1:8000 --key KEY --paths FILE --rate 300 --seconds 60
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np


class Connection:
    def __init__(self, host: str, port: int, headers: bytes) -> None:
        self.host, self.port, self.headers = host, port, headers
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """The status of ``GET path`` (the body is read and dropped)."""
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(b"GET " + path.encode() + b" HTTP/1.1\r\n" + self.headers)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        if "content-length" in fields:
            await self.reader.readexactly(int(fields["content-length"]))
        elif fields.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def run(
    url: str, key: str, paths: list[str], rate: float, seconds: float, connections: int
) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    headers = f"Host: {parts.netloc}\r\nX-API-Key: {key}\r\nAccept: */*\r\n\r\n".encode()
    free: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        free.put_nowait(Connection(host, port, headers))
    total = int(rate * seconds)
    latencies = np.full(total, np.nan)
    statuses: Counter[str] = Counter()

    async def one(i: int, due: float) -> None:
        conn = await free.get()
        try:
            status = await asyncio.wait_for(conn.get(paths[i % len(paths)]), 30)
            statuses[str(status)] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            statuses[type(exc).__name__] += 1
            conn.close()
        finally:
            free.put_nowait(conn)
        latencies[i] = time.perf_counter() - due

    start = time.perf_counter() + 0.2
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    for _ in range(connections):
        (await free.get()).close()
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
    p.add_argument("--connections", type=int, default=64)
    a = p.parse_args()
    paths = [line for line in a.paths.read_text().splitlines() if line]
    print(json.dumps(asyncio.run(run(a.url, a.key, paths, a.rate, a.seconds, a.connections))))


if __name__ == "__main__":
    main()
