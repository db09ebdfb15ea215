"""The web UI when things fail: a plugin that never comes up, and a supervisor that stalls.

Its own ``toru serve`` (short start timeout, three failures to give up), so the stall and
the crash loop do not disturb the other browser tests.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import timing
from tests.servers import ToruServer
from tests.ui.conftest import serve
from tests.ui.plugins.build import build as build_test_plugins

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.ui.helpers import plugin_info, set_enabled, sidebar_entry, sign_in  # noqa: E402

pytestmark = pytest.mark.browser

MAX_FAILURES = 3


@pytest.fixture(scope="module")
def server() -> Iterator[ToruServer]:
    """Only the small test plugins: the start timeout is short, so ``ui-no-socket`` fails."""

    def build(home: Path) -> list[Path]:
        found = build_test_plugins(home / "test-plugins", ids=("ui-view-ok",), no_socket=True)
        return list(found.values())

    env = {
        "TORU_START_TIMEOUT": str(timing.scaled(2.0)),
        "TORU_MAX_FAILURES": str(MAX_FAILURES),
        "TORU_RESTART_BACKOFF": "0.2",
        "TORU_HEALTH_INTERVAL": "1",
    }
    yield from serve(build, env, "toru-uif-")


def wait_for_state(server: ToruServer, admin, plugin_id: str, state: str) -> dict:
    deadline = time.monotonic() + timing.WAIT
    info: dict = {}
    while time.monotonic() < deadline:
        info = plugin_info(server, admin, plugin_id)
        if info["state"] == state:
            return info
        time.sleep(0.2)
    raise AssertionError(f"{plugin_id} never reached {state}: {info}")


def supervisor_pid(server: ToruServer) -> int:
    """The ``toru supervisor`` child of ``toru serve``."""
    assert server.pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            if ppid == server.pid and b"supervisor" in cmdline:
                return int(entry.name)
    raise AssertionError(f"no supervisor under {server.pid}")


def test_failed_plugin_shows_reason_failures_and_red_marks(new_page, server, admin, shots):
    set_enabled(server, admin, "ui-no-socket", True)
    info = wait_for_state(server, admin, "ui-no-socket", "failed")
    assert info["restarts"] == 0  # it never came up, so "restarts" alone would say nothing
    page = new_page()
    sign_in(page)
    card = page.get_by_test_id("plugin-card-ui-no-socket")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Failed")
    reason = card.get_by_test_id("problem-reason")
    expect(reason).to_contain_text(f"Disabled after {MAX_FAILURES} consecutive failures")
    expect(reason).to_contain_text("did not create its socket within")
    expect(card.get_by_test_id("plugin-failures")).to_have_text(str(MAX_FAILURES))
    expect(card.get_by_test_id("plugin-failures")).to_have_class("text-bad")
    expect(card.locator(".spark-crash")).to_have_count(MAX_FAILURES)
    expect(card.locator(".spark")).to_have_attribute("aria-label", re.compile(r"3 crashes"))
    card_text = reason.inner_text()
    page.screenshot(path=shots / "15-failed-plugin.png", animations="disabled")

    card.get_by_role("link", name="Details").click()
    expect(page.get_by_test_id("crash-reason")).to_have_text(card_text)
    expect(page.get_by_test_id("events")).to_contain_text("disabled")
    expect(page.locator(".spark-wide .spark-crash")).to_have_count(MAX_FAILURES)
    page.screenshot(path=shots / "15b-failed-plugin-details.png", full_page=True)
    set_enabled(server, admin, "ui-no-socket", False)


def test_stalled_supervisor_banner_unknown_states_and_view_timeout(
    new_page, server, admin, console, shots
):
    # While the supervisor is stopped, polls give up (aborted fetches) and /healthz is 503.
    console.allow("503", "/api/")
    console.allow("504", "/api/")
    set_enabled(server, admin, "ui-view-ok", True)
    wait_for_state(server, admin, "ui-view-ok", "running")
    page = new_page()
    sign_in(page)
    details = new_page()  # a second tab, on a plugin's details page during the stall
    sign_in(details)
    card = page.get_by_test_id("plugin-card-ui-view-ok")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Running")
    expect(sidebar_entry(page, "ui-view-ok")).to_be_visible()
    expect(page.get_by_test_id("supervisor-banner")).to_be_hidden()

    pid = supervisor_pid(server)
    os.kill(pid, signal.SIGSTOP)
    try:
        banner = page.get_by_test_id("supervisor-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("The supervisor does not answer")
        expect(card.get_by_test_id("plugin-state")).to_have_text("Unknown")
        expect(card).to_have_attribute("data-stale", "true")
        expect(page.get_by_test_id("nav-dot-ui-view-ok")).to_have_attribute("data-health", "grey")
        page.screenshot(path=shots / "16-supervisor-stalled.png", animations="disabled")
        details.goto("/#/plugins/ui-view-ok")
        expect(details.get_by_test_id("error-reason")).to_contain_text("retrying")

        # The plugin's view gives up with a clear message instead of "Loading..." forever.
        sidebar_entry(page, "ui-view-ok").click()
        error = page.get_by_test_id("plugin-error")
        expect(error).to_contain_text("did not load")
        expect(error).to_contain_text("The supervisor does not answer")
        page.screenshot(path=shots / "16b-plugin-view-timeout.png", animations="disabled")
    finally:
        os.kill(pid, signal.SIGCONT)

    expect(page.get_by_test_id("supervisor-banner")).to_be_hidden()
    expect(details.get_by_test_id("metadata")).to_be_visible()  # it retried and recovered
    expect(page.get_by_test_id("view-state")).to_have_text("Running")
    # No click needed: the view loads by itself once the supervisor answers.
    expect(page.get_by_test_id("small-view")).to_have_text("small view mounted")
    set_enabled(server, admin, "ui-view-ok", False)
