"""``shopml serve`` as a real uvicorn process over a promoted bucket: a promotion while
requests run (no request fails, the version switches), a version whose files are altered
after promotion (refused, the old one serves on, /readyz says why), a rollback (served
within one poll), events posted over HTTP, and a clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.promotion import layout
from pipelines.promotion.bucket import LocalBucket
from pipelines.promotion.promote import rollback
from pipelines.registry.models import MODEL_NAME
from serving.keys import add_key
from tests.served import ServedShop

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
POLL = 1.0


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, shop: ServedShop, root: Path) -> None:
        self.settings = shop.copy(root)
        self.key = add_key(self.settings.serving_keys_file, "e2e", "client")
        self.url = f"http://127.0.0.1:{_port()}"
        env = {
            **os.environ,
            "SHOPML_HOME": str(self.settings.home),
            "SHOPML_SERVING_BUCKET_URI": self.settings.serving_bucket_uri,
            "SHOPML_SERVING_KEYS_FILE": str(self.settings.serving_keys_file),
            "SHOPML_SERVING_SECRET_FILE": str(self.settings.serving_secret_file),
            "SHOPML_SERVING_EVENTS_DIR": str(self.settings.serving_events_dir),
            "SHOPML_SERVING_POLL_SECONDS": str(POLL),
        }
        self.log = (root / "serve.log").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "serve", "--port", self.url.rsplit(":", 1)[1]],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.http = httpx.Client(base_url=self.url, headers={"X-API-Key": self.key}, timeout=10)

    def wait_ready(self, seconds: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, Path(self.log.name).read_text()
            try:
                r = self.http.get("/readyz")
                if r.status_code == 200:
                    return dict(r.json())
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready in {seconds} s: {Path(self.log.name).read_text()}")

    def version(self) -> int:
        return int(self.http.get("/v1/recommendations/u0001?k=3").json()["version"])

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.http.close()
        self.log.close()
        return code


@pytest.fixture
def server(served_shop: ServedShop, tmp_path: Path) -> Iterator[Server]:
    s = Server(served_shop, tmp_path)
    try:
        yield s
    finally:
        s.stop()


def _until(check: Any, seconds: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"not within {seconds} s")


def test_swap_refusal_rollback_and_events_on_a_running_server(
    server: Server, served_shop: ServedShop, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = server.wait_ready()
    v1, v2, v3 = served_shop.rec
    assert ready["models"][MODEL_NAME]["served"]["version"] == v1

    # 1. promote v2 while a bounded loop of requests runs: none fails, the version moves
    results: list[tuple[int, int | None]] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": server.key}) as c:
            while not stop.is_set() and len(results) < 5000:
                r = c.get("/v1/recommendations/u0001?k=5")
                results.append((r.status_code, r.json().get("version")))

    loop = threading.Thread(target=load)
    loop.start()
    time.sleep(0.5)
    served_shop.promote(MODEL_NAME, 1, server.settings)
    _until(lambda: any(v == v2 for _, v in results[-5:]), 15)
    time.sleep(0.5)
    stop.set()
    loop.join()
    assert results and all(code == 200 for code, _ in results), {c for c, _ in results}
    versions = [v for _, v in results]
    switch = versions.index(v2)
    assert set(versions[:switch]) == {v1} and set(versions[switch:]) == {v2}

    # 2. v3 promoted, then a file altered in the bucket before the server reads it
    bucket_root = Path(server.settings.serving_bucket_uri.removeprefix("file://"))
    ranker = bucket_root / layout.version_key(MODEL_NAME, v3, "bundle/ranker.txt")
    put = LocalBucket.put

    def alter_before_pointing(self: LocalBucket, key: str, data: bytes) -> None:
        if key == layout.pointer_key(MODEL_NAME) and ranker.is_file():
            ranker.write_bytes(ranker.read_bytes() + b"\n# altered")
        put(self, key, data)

    monkeypatch.setattr(LocalBucket, "put", alter_before_pointing)
    served_shop.promote(MODEL_NAME, 2, server.settings)
    monkeypatch.setattr(LocalBucket, "put", put)

    def refused() -> bool:
        m = server.http.get("/readyz").json()["models"][MODEL_NAME]
        return bool(m.get("refused", {}).get("version") == v3)

    _until(refused, 10)
    ready = server.http.get("/readyz")
    assert ready.status_code == 200
    why = ready.json()["models"][MODEL_NAME]["refused"]["reason"]
    assert "bundle/ranker.txt" in why and "altered" in why
    assert server.version() == v2
    metrics = server.http.get("/metrics").text
    assert f'shopml_swaps_refused_total{{model="{MODEL_NAME}"}} 1.0' in metrics

    # 3. a rollback is a pointer move: served within one poll
    ranker.write_bytes(ranker.read_bytes().removesuffix(b"\n# altered"))
    rollback(to_version=v1, reason="e2e rollback", settings=server.settings, requested_by="ops")
    took = _until(lambda: server.version() == v1, POLL + 5)
    assert took <= POLL + 5

    # 4. events over HTTP land in the spool
    answer = server.http.get("/v1/search?q=cat%20litter&k=3").json()
    event = {"type": "click", "user_id": "u0001", "item_id": answer["items"][0]["item_id"],
             "request_id": answer["request_id"], "position": 1}  # fmt: skip
    assert server.http.post("/v1/events", json={"events": [event]}).status_code == 202
    spooled = "".join(p.read_text() for p in server.settings.serving_events_dir.glob("*.jsonl"))
    assert answer["request_id"] in spooled and '"type":"click"' in spooled

    # 5. one JSON line per request, and a clean stop on SIGTERM
    assert server.stop() in (0, 143)  # 143: SIGTERM's exit status after a graceful stop
    lines = Path(server.log.name).read_text()
    assert "Traceback" not in lines
    assert '"endpoint":"/v1/search"' in lines and '"key":"e2e"' in lines
    assert "cat litter" not in lines  # no query text in the log
