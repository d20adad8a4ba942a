"""The preview page in a real headless browser: Debian's Chromium driven by Playwright
(``make test`` installs Chromium where it can; this test skips, saying why, where no
browser can run)."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest
import uvicorn

from pipelines.registry.models import MODEL_NAME
from serving.app import create_app
from serving.keys import add_key
from tests.served import ServedShop
from tests.serving.test_api import _known_user

pytestmark = pytest.mark.slow
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("no Chromium: `make test` installs Debian's chromium when run as root")
    return path


def test_the_preview_page_in_a_browser(served_shop: ServedShop, tmp_path: Path) -> None:
    browser_path = _chromium()
    from playwright.sync_api import sync_playwright

    settings = served_shop.copy(tmp_path)
    served_shop.promote(MODEL_NAME, 1, settings)  # v2 served, v1 to compare with
    admin = add_key(settings.serving_keys_file, "reviewer", "admin")
    app = create_app(replace(settings), poll=False, blocking_start=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            try:
                browser = pw.chromium.launch(executable_path=browser_path, args=CHROMIUM_FLAGS)
            except Exception as exc:  # a browser that cannot start here: say so
                pytest.skip(f"Chromium at {browser_path} does not start: {exc}")
            context = browser.new_context(http_credentials={"username": "r", "password": admin})
            page = context.new_page()
            page.goto(f"http://127.0.0.1:{port}/preview")
            assert "ShopML preview" in page.title()
            user = _known_user(served_shop)
            page.fill("input[name=user_id]", user)
            page.click("button[type=submit]")
            page.wait_for_selector("section[data-column=compared] .item")
            served = page.locator("section[data-column=served] .item")
            compared = page.locator("section[data-column=compared] .item")
            assert served.count() == 10 and compared.count() == 10
            heading = page.locator("section[data-column=served] h2").inner_text()
            assert f"version {served_shop.rec[1]}" in heading
            assert (
                f"version {served_shop.rec[0]}"
                in page.locator("section[data-column=compared] h2").inner_text()
            )
            first = served.first.inner_text()
            assert "score" in first and served.first.locator(".reasons").count() == 1
            page.screenshot(path=str(tmp_path / "preview-user.png"), full_page=True)
            # a query: search results, the same page
            page.fill("input[name=user_id]", "")
            page.fill("input[name=q]", "cat littter")
            page.click("button[type=submit]")
            page.wait_for_selector("section[data-column=served] .item")
            text = page.locator("section[data-column=served]").inner_text()
            assert "shopml-search" in text and "corrected query" in text
            assert "Litter" in text
            page.screenshot(path=str(tmp_path / "preview-query.png"), full_page=True)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert (tmp_path / "preview-user.png").stat().st_size > 10_000
