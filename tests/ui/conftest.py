"""Fixtures of the browser tests: one Chromium per module, a fresh context per page, and a
check that the page logged no error. Each module defines its own ``server`` fixture."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from tests import timing
from tests.servers import ToruServer

try:
    from playwright import sync_api as playwright_api
except ImportError:  # the test modules skip themselves with importorskip
    playwright_api = None

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
DELIBERATE = "deliberate failure"
WAIT_MS = int(
    timing.scaled(20_000)
)  # upper bound for UI changes driven by the 3 s poll; never a timing assertion
USER_PASSWORD = "user-pass-456"
WIDE, NARROW = 1366, 390  # the widths every page is looked at (and photographed)
if playwright_api is not None:
    playwright_api.expect.set_options(timeout=WAIT_MS)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if playwright_api is None:
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def shots(test_output: Path) -> Path:
    d = test_output / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


class Console:
    """Everything the page complained about, minus the deliberate throws."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.allowed: list[tuple[str, str]] = []

    def allow(self, text: str, url: str) -> None:
        """Chromium logs every 4xx response; allow one the test provokes on purpose."""
        self.allowed.append((text, url))

    def on_console(self, msg) -> None:
        if msg.type != "error" or DELIBERATE in msg.text:
            return
        url = (msg.location or {}).get("url", "")
        if any(t in msg.text and u in url for t, u in self.allowed):
            return
        self.errors.append(f"console: {msg.text} @ {url}")

    def on_pageerror(self, exc) -> None:
        if DELIBERATE not in str(exc):
            self.errors.append(f"pageerror: {exc}")


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def new_page(browser, server: ToruServer, console: Console):
    """Factory for pages in fresh contexts; asserts a clean console when the test ends."""
    contexts = []

    def make(width: int = WIDE, height: int = 860, **options):
        ctx = browser.new_context(
            viewport={"width": width, "height": height}, base_url=server.url, **options
        )
        ctx.set_default_timeout(WAIT_MS)
        contexts.append(ctx)
        page = ctx.new_page()
        page.on("console", console.on_console)
        page.on("pageerror", console.on_pageerror)
        return page

    yield make
    for ctx in contexts:
        ctx.close()
    assert console.errors == [], "\n".join(console.errors)


def serve(build, env: dict[str, str], prefix: str) -> Iterator[ToruServer]:
    """A module's ``toru serve`` in a fresh home: ``build(home)`` returns the plugin paths."""
    home = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    plugins: Iterable[Path] = build(home)
    srv = ToruServer(home, plugins=plugins, workers=2, env=env)
    try:
        srv.start(timeout=60)
        yield srv
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(server: ToruServer) -> tuple[str, str]:
    """An API session for arranging state: (cookie, csrf)."""
    return server.login()
