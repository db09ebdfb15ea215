"""The web UI in headless Chromium against a real ``toru serve`` with the example plugins.

One server and one browser for the module; every test gets a fresh browser context (its
own cookies) and fails if the page logged a console error or threw, apart from the bundles
that throw on purpose. Screenshots of the main screens go to test-output/screenshots/.
"""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ToruServer
from tests.supervisor.helpers import wait_for
from tests.ui.conftest import NARROW, USER_PASSWORD, WIDE, Console, serve
from tests.ui.plugins.build import build as build_broken_plugins
from toru import __version__ as toru_version

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.ui.helpers import (  # noqa: E402 - after the skip when Playwright is missing
    add_user,
    all_plugins,
    assert_controls_labelled,
    plugin_info,
    set_enabled,
    sidebar_entry,
    sign_in,
)

pytestmark = pytest.mark.browser

# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(example_plugins: dict[str, Path]) -> Iterator[ToruServer]:
    """One ``toru serve`` with the examples and the misbehaving UI plugins, none enabled.

    The long restart backoff keeps a killed plugin visibly down while the test looks at it.
    """

    def build(home: Path) -> list[Path]:
        # A generous limit, so the details page has one to show (enforced or not on this host).
        (home / "toru.toml").write_text('[plugins.hello-python.limits]\nmemory_max = "512M"\n')
        return [*example_plugins.values(), *build_broken_plugins(home / "broken").values()]

    env = {"TORU_RESTART_BACKOFF": "30", "TORU_HEALTH_INTERVAL": "1"}
    yield from serve(build, env, "toru-ui-")


# ---------------------------------------------------------------------------- tests


def test_login_shows_user_and_role(new_page, console: Console, shots: Path) -> None:
    console.allow("401", "/api/auth/login")  # the wrong password below
    page = new_page()
    page.goto("/")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill("wrong-password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Wrong username or password")
    page.get_by_label("Password").fill("")
    page.screenshot(path=shots / "01-login.png", animations="disabled")

    page.get_by_label("Password").fill("admin-pass-123")
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_test_id("user-name")).to_have_text("admin")
    expect(page.get_by_test_id("user-role")).to_have_text("admin")
    expect(page.get_by_test_id("plugin-card-hello-python")).to_be_visible()

    # A reload keeps the session and gets the CSRF token back from /api/auth/me.
    page.reload()
    expect(page.get_by_test_id("user-role")).to_have_text("admin")

    page.get_by_test_id("sign-out").click()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.reload()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()


def test_ended_session_returns_to_login(new_page, console: Console) -> None:
    console.allow("401", "/api/")  # the poll that finds the session gone
    page = new_page()
    sign_in(page)
    expect(page.get_by_test_id("plugin-grid")).to_be_visible()
    page.context.clear_cookies()
    expect(page.get_by_role("status").filter(has_text="session has ended")).to_be_visible()
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    sign_in(page)
    expect(page.get_by_test_id("plugin-grid")).to_be_visible()


def test_enable_by_keyboard_shows_green_sidebar_entry(new_page, server, admin, shots: Path) -> None:
    set_enabled(server, admin, "hello-python", False)
    page = new_page()
    sign_in(page)
    card = page.get_by_test_id("plugin-card-hello-python")
    toggle = card.get_by_role("switch")
    expect(toggle).to_have_attribute("aria-checked", "false")
    expect(sidebar_entry(page, "hello-python")).to_have_count(0)

    toggle.focus()
    page.keyboard.press("Space")
    expect(page.get_by_test_id("toast").filter(has_text="Hello")).to_contain_text("enabled")
    expect(toggle).to_have_attribute("aria-checked", "true")
    expect(sidebar_entry(page, "hello-python")).to_be_visible()
    expect(page.get_by_test_id("nav-dot-hello-python")).to_have_attribute("data-health", "green")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Running")
    assert_controls_labelled(page)
    page.screenshot(path=shots / "02-plugin-manager.png", full_page=True, animations="disabled")


def test_plugin_view_counter_persists_and_unmounts(new_page, server, admin, shots) -> None:
    set_enabled(server, admin, "hello-python", True)
    page = new_page()
    sign_in(page)
    sidebar_entry(page, "hello-python").click()
    expect(page).to_have_url(re.compile(r"#/p/hello-python$"))
    count = page.get_by_test_id("hello-count")
    expect(count).to_have_text(re.compile(r"^\d+$"))
    before = int(count.inner_text())

    page.get_by_test_id("hello-increment").click()
    expect(count).to_have_text(str(before + 1))
    expect(page.get_by_test_id("toast").filter(has_text=f"Count is {before + 1}")).to_be_visible()
    page.screenshot(path=shots / "03-plugin-view.png", animations="disabled")

    page.reload()
    expect(page.get_by_test_id("hello-count")).to_have_text(str(before + 1))
    # After a reload the CSRF token comes from /api/auth/me: a POST still works.
    page.get_by_test_id("hello-increment").click()
    expect(count).to_have_text(str(before + 2))
    # The bundle script tag was inserted once.
    assert page.locator('script[data-plugin="hello-python"]').count() == 1

    page.get_by_test_id("nav-plugins").click()
    expect(page.get_by_test_id("plugin-grid")).to_be_visible()
    assert page.evaluate("window.__helloUnmounted") == 1
    expect(page.get_by_test_id("hello-count")).to_have_count(0)

    # Coming back mounts again without loading the bundle a second time.
    sidebar_entry(page, "hello-python").click()
    expect(page.get_by_test_id("hello-count")).to_have_text(str(before + 2))
    assert page.locator('script[data-plugin="hello-python"]').count() == 1


@pytest.mark.parametrize("plugin_id", ["raw-python", "hello-node", "system-info"])
def test_other_example_views_mount(new_page, server, admin, shots, plugin_id: str) -> None:
    set_enabled(server, admin, plugin_id, True)
    page = new_page()
    sign_in(page)
    sidebar_entry(page, plugin_id).click()
    container = page.get_by_test_id("plugin-container")
    expect(container).to_be_visible()
    expect(container).not_to_be_empty()
    expect(page.get_by_test_id("plugin-error")).to_have_count(0)
    page.wait_for_load_state("networkidle")
    page.screenshot(path=shots / f"10-view-{plugin_id}.png", animations="disabled")
    set_enabled(server, admin, plugin_id, False)


def test_logs_viewer_shows_plugin_lines(new_page, server, admin, shots) -> None:
    set_enabled(server, admin, "hello-python", True)
    # Make sure the plugin has logged a request or two.
    cookie, _ = admin
    server.request("GET", "/api/plugins/route/hello/counter", cookie=cookie)
    page = new_page()
    sign_in(page)
    page.get_by_test_id("plugin-card-hello-python").get_by_role("link", name="Logs").click()
    expect(page).to_have_url(re.compile(r"#/plugins/hello-python/logs$"))
    rows = page.get_by_test_id("log-row")
    expect(rows.first).to_be_visible()
    assert rows.count() >= 1
    # Readable time, not an ISO string.
    first_time = rows.first.locator("time").inner_text()
    assert re.match(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$", first_time), first_time
    page.screenshot(path=shots / "04-logs.png", full_page=True, animations="disabled")
    assert_controls_labelled(page)

    page.get_by_label("Level").select_option("error")
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="log-row"]')]
              .every(r => r.dataset.level === 'error')"""
    )
    page.get_by_label("Level").select_option("")
    expect(rows.first).to_be_visible()

    # Paging: enough lines for two pages of 20, newest first.
    cookie, csrf = admin
    for _ in range(25):
        server.request(
            "POST", "/api/plugins/route/hello/counter/increment", cookie=cookie, csrf=csrf
        )
    page.get_by_test_id("log-refresh").click()
    page.get_by_label("Page size").select_option("20")
    expect(rows).to_have_count(20)
    first_msg = rows.first.locator("td.log-msg")
    newest = first_msg.text_content()
    expect(page.get_by_test_id("log-newer")).to_be_disabled()
    page.get_by_test_id("log-older").click()
    expect(page.get_by_test_id("log-page")).to_have_text("Page 2")
    expect(rows.first).to_be_visible()
    expect(first_msg).not_to_have_text(newest)
    page.get_by_test_id("log-newer").click()
    expect(page.get_by_test_id("log-page")).to_have_text("Page 1")
    expect(first_msg).to_have_text(newest)


def test_disable_removes_sidebar_entry(new_page, server, admin) -> None:
    for p in all_plugins(server, admin):
        if p["enabled"] and p["id"] != "system-info":
            set_enabled(server, admin, p["id"], False)
    set_enabled(server, admin, "system-info", True)
    page = new_page()
    sign_in(page)
    expect(sidebar_entry(page, "system-info")).to_be_visible()
    expect(page.get_by_test_id("sidebar-plugins")).to_be_visible()

    page.get_by_test_id("plugin-card-system-info").get_by_role("switch").click()
    expect(page.get_by_test_id("toast").filter(has_text="System")).to_contain_text("disabled")
    expect(sidebar_entry(page, "system-info")).to_have_count(0)
    # No plugin enabled: the whole section is hidden.
    expect(page.get_by_test_id("sidebar-plugins")).to_be_hidden()

    # Enabled from elsewhere (the API): the open page follows without a reload.
    set_enabled(server, admin, "system-info", True)
    expect(sidebar_entry(page, "system-info")).to_be_visible()


def test_admin_restarts_from_the_card_and_the_details(new_page, server, admin) -> None:
    set_enabled(server, admin, "hello-python", True)
    page = new_page()
    sign_in(page)
    card = page.get_by_test_id("plugin-card-hello-python")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Running")
    pid = plugin_info(server, admin, "hello-python")["pid"]
    card.get_by_role("button", name="Restart Hello").click()
    expect(page.get_by_test_id("toast").filter(has_text="restarted")).to_be_visible()
    after = plugin_info(server, admin, "hello-python")
    assert after["pid"] != pid and after["state"] == "running"
    assert any(e["event_type"] == "upgraded" for e in after["events"])
    # the same action in the details header
    page.goto("/#/plugins/hello-python")
    page.get_by_test_id("restart-hello-python").click()
    wait_for(lambda: plugin_info(server, admin, "hello-python")["pid"] != after["pid"])
    # a disabled plugin offers no restart
    set_enabled(server, admin, "hello-python", False)
    expect(page.get_by_test_id("restart-hello-python")).to_be_hidden()


def test_plain_user_sees_no_toggles(new_page, server, admin) -> None:
    add_user(server, admin, "viewer", USER_PASSWORD)
    set_enabled(server, admin, "hello-python", True)
    page = new_page()
    sign_in(page, "viewer", USER_PASSWORD)
    expect(page.get_by_test_id("user-role")).to_have_text("user")
    expect(page.get_by_test_id("plugin-card-hello-python")).to_be_visible()
    assert page.get_by_role("switch").count() == 0
    expect(page.get_by_test_id("nav-users")).to_have_count(0)
    # Users still use plugins.
    sidebar_entry(page, "hello-python").click()
    expect(page.get_by_test_id("hello-count")).to_have_text(re.compile(r"^\d+$"))
    page.get_by_test_id("hello-increment").click()
    expect(page.get_by_test_id("toast").filter(has_text="Count is")).to_be_visible()
    # Details have no switch either.
    page.goto("/#/plugins/hello-python")
    expect(page.get_by_test_id("metadata")).to_be_visible()
    assert page.get_by_role("switch").count() == 0
    assert page.get_by_test_id("restart-hello-python").count() == 0


def test_admin_manages_users(new_page, shots: Path) -> None:
    page = new_page()
    sign_in(page)
    page.get_by_test_id("nav-users").click()
    page.get_by_label("Username").fill("operator2")
    page.get_by_label("Password", exact=True).fill("operator-pass-789")
    page.get_by_label("Role").select_option("user")
    page.get_by_role("button", name="Add user").click()
    expect(page.get_by_test_id("toast").filter(has_text="operator2")).to_contain_text("added")
    row = page.get_by_role("row").filter(has_text="operator2")
    expect(row).to_be_visible()
    page.screenshot(path=shots / "09-users.png", animations="disabled")
    assert_controls_labelled(page)
    row.get_by_role("button", name="Make operator2 an admin").click()
    expect(page.get_by_test_id("toast").filter(has_text="now an admin")).to_be_visible()
    expect(row.locator(".role")).to_have_text("admin")
    row.get_by_role("button", name="Make operator2 a user").click()
    expect(row.locator(".role")).to_have_text("user")
    page.on("dialog", lambda d: d.accept())
    row.get_by_role("button", name="Delete user operator2").click()
    expect(page.get_by_role("row").filter(has_text="operator2")).to_have_count(0)
    expect(page.get_by_test_id("liveness")).to_contain_text("Live")


def test_crash_turns_dot_red_and_shows_details(new_page, server, admin, shots) -> None:
    set_enabled(server, admin, "raw-python", True)
    page = new_page()
    sign_in(page)
    expect(page.get_by_test_id("nav-dot-raw-python")).to_have_attribute("data-health", "green")

    pid = plugin_info(server, admin, "raw-python")["pid"]
    assert pid
    os.kill(pid, signal.SIGKILL)

    # One reason, the supervisor's crash event, worded the same on the card and in details.
    card = page.get_by_test_id("plugin-card-raw-python")
    card_reason = card.get_by_test_id("problem-reason")
    expect(card_reason).to_have_text("Exited: killed by SIGKILL")
    expect(card.get_by_test_id("plugin-failures")).to_have_text("1")
    card.get_by_role("link", name="Details").click()
    crash = page.get_by_test_id("crash-details")
    expect(crash).to_be_visible()
    expect(page.get_by_test_id("crash-reason")).to_have_text("Exited: killed by SIGKILL")
    expect(page.get_by_test_id("events")).to_contain_text("crashed")
    expect(page.get_by_test_id("detail-dot")).to_have_attribute("data-health", "red")
    expect(page.get_by_test_id("nav-dot-raw-python")).to_have_attribute("data-health", "red")
    page.screenshot(path=shots / "05-details-crash.png", full_page=True, animations="disabled")
    assert_controls_labelled(page)

    # Its view says it is down, with a way to its logs, instead of a broken page.
    sidebar_entry(page, "raw-python").click()
    panel = page.get_by_test_id("plugin-error")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("crashed")
    expect(panel).to_contain_text("Exited: killed by SIGKILL")
    expect(page.get_by_test_id("error-logs-link")).to_be_visible()
    assert_controls_labelled(page)
    set_enabled(server, admin, "raw-python", False)


def test_bundle_that_throws_shows_error_panel(new_page, server, admin, shots) -> None:
    set_enabled(server, admin, "ui-throw-load", True)
    set_enabled(server, admin, "ui-throw-mount", True)
    page = new_page()
    sign_in(page)
    expect(page.get_by_test_id("nav-dot-ui-throw-load")).to_have_attribute("data-health", "green")

    sidebar_entry(page, "ui-throw-load").click()
    panel = page.get_by_test_id("plugin-error")
    expect(panel).to_be_visible()
    expect(page.get_by_test_id("error-reason")).to_contain_text("deliberate failure while loading")
    page.screenshot(path=shots / "06-error-panel.png", animations="disabled")

    sidebar_entry(page, "ui-throw-mount").click()
    expect(page.get_by_test_id("error-reason")).to_contain_text("mount() threw")
    expect(page.get_by_test_id("error-reason")).to_contain_text("deliberate failure in mount")
    # The rest of the console still works: the link leads to the plugin's logs.
    page.get_by_test_id("error-logs-link").click()
    expect(page).to_have_url(re.compile(r"#/plugins/ui-throw-mount/logs$"))
    expect(page.get_by_test_id("log-row").first).to_be_visible()
    set_enabled(server, admin, "ui-throw-load", False)
    set_enabled(server, admin, "ui-throw-mount", False)


def replace_binary(path: Path, text: str) -> None:
    """Swap a plugin file atomically, as an operator's install would."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    tmp.chmod(0o755)
    tmp.replace(path)


def test_invalid_plugin_explains_itself_and_how_to_retry(new_page, server, shots) -> None:
    page = new_page()
    sign_in(page)
    card = page.get_by_test_id("plugin-card-ui-bad-meta")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Invalid")
    expect(card.locator(".card-error")).not_to_be_empty()
    expect(card.get_by_role("switch")).to_be_disabled()
    expect(sidebar_entry(page, "ui-bad-meta")).to_have_count(0)
    hint = card.get_by_test_id("invalid-hint")
    expect(hint).to_contain_text("plugins/ui-bad-meta.binary")
    page.screenshot(path=shots / "17-invalid-plugin.png", animations="disabled")
    # Retry (POST /api/plugins/rescan) with the file still broken: it stays invalid.
    hint.get_by_test_id("retry-ui-bad-meta").click()
    expect(page.get_by_role("status").filter(has_text="Rescanned")).to_be_visible()
    expect(card.get_by_test_id("plugin-state")).to_have_text("Invalid")
    expect(page.get_by_test_id("rescan")).to_be_visible()  # the toolbar's, for admins

    # The retry the hint describes: a fixed file is picked up and the card follows.
    binary = server.home / "plugins" / "ui-bad-meta.binary"
    broken = binary.read_text()
    meta = '{"id": "ui-bad-meta", "name": "Fixed Meta", "version": "0.2.0", "route": "/fixed"}'
    replace_binary(binary, f"#!/bin/sh\necho '{meta}'\n")
    try:
        page.get_by_test_id("rescan").click()
        expect(card.get_by_test_id("plugin-state")).to_have_text("Stopped")
        expect(hint).to_be_hidden()
        expect(card.get_by_role("switch")).to_be_enabled()
    finally:
        replace_binary(binary, broken)
    expect(card.get_by_test_id("plugin-state")).to_have_text("Invalid")


def test_usable_at_375px(new_page, server, admin, shots) -> None:
    set_enabled(server, admin, "hello-python", True)
    page = new_page(width=375, height=812)
    sign_in(page)
    expect(page.get_by_test_id("plugin-card-hello-python")).to_be_visible()
    overflow = page.evaluate("document.documentElement.scrollWidth")
    assert overflow <= 375, f"page is {overflow}px wide at 375px"
    page.screenshot(path=shots / "07-narrow-375.png", full_page=True, animations="disabled")

    menu = page.get_by_role("button", name="Open navigation")
    menu.click()
    expect(sidebar_entry(page, "hello-python")).to_be_visible()
    page.screenshot(path=shots / "08-narrow-375-nav.png", animations="disabled")
    sidebar_entry(page, "hello-python").click()
    expect(page.get_by_test_id("hello-count")).to_be_visible()
    expect(page.get_by_test_id("user-role")).to_be_visible()
    for route, ready in (
        ("#/plugins/hello-python", "metadata"),
        ("#/plugins/hello-python/logs", "log-row"),
        ("#/users", "nav-users"),
    ):
        page.goto(f"/{route}")
        expect(page.get_by_test_id(ready).first).to_be_attached()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375, f"{route} is {width}px wide at 375px"
    page.goto("/#/plugins/hello-python/logs")
    expect(page.get_by_test_id("log-row").first).to_be_visible()
    page.screenshot(path=shots / "07b-narrow-375-logs.png", animations="disabled")


def test_manager_sparkline_shows_latency(new_page, server, admin, shots) -> None:
    for plugin_id in ("hello-python", "system-info"):
        set_enabled(server, admin, plugin_id, True)
    cookie, _ = admin
    for _ in range(20):
        status, _, _ = server.request("GET", "/api/plugins/route/hello/counter", cookie=cookie)
        assert status == 200
    page = new_page()
    sign_in(page)
    spark = page.get_by_test_id("plugin-card-hello-python").locator(".spark")
    expect(spark).to_have_attribute("aria-label", re.compile(r"p50 [\d.]+ m?s, p99"))
    expect(spark.locator("polyline")).to_have_count(2)
    page.screenshot(path=shots / "02b-plugin-manager-traffic.png", animations="disabled")


def test_api_only_plugin_is_listed_not_in_sidebar(new_page, server, admin, console, shots) -> None:
    console.allow("404", "/api/plugins/ui-api-only/bundle.js")  # how the console learns it
    set_enabled(server, admin, "ui-api-only", True)
    set_enabled(server, admin, "ui-view-ok", True)
    page = new_page()
    probes: list[str] = []
    page.on("request", lambda r: "/ui-api-only/bundle.js" in r.url and probes.append(r.url))
    sign_in(page)
    card = page.get_by_test_id("plugin-card-ui-api-only")
    expect(card.get_by_test_id("plugin-api-only")).to_contain_text(
        "/api/plugins/route/ui-api-only/"
    )
    # Learnt once: two more polls ask nothing, nor does a reload (remembered per version).
    live = page.get_by_test_id("liveness")
    for _ in range(2):
        before = live.inner_text()
        expect(live).not_to_have_text(before)
    page.reload()
    expect(card.get_by_test_id("plugin-api-only")).to_be_visible()
    assert len(probes) == 1, probes
    expect(card.get_by_role("link", name="Open")).to_be_hidden()
    # A plugin with a view is in the sidebar; the API-only one is not.
    expect(sidebar_entry(page, "ui-view-ok")).to_be_visible()
    expect(sidebar_entry(page, "ui-api-only")).to_have_count(0)
    page.get_by_test_id("plugin-filter").select_option("api")
    expect(card).to_be_visible()
    expect(page.get_by_test_id("plugin-card-ui-view-ok")).to_be_hidden()
    # Reached by its URL anyway: an explanation, not a red "could not be loaded" panel.
    page.goto("/#/p/ui-api-only")
    expect(page.get_by_test_id("plugin-api-only-view")).to_contain_text("has no web view")
    expect(page.get_by_test_id("plugin-error")).to_have_count(0)
    page.screenshot(path=shots / "11-api-only.png", animations="disabled")
    set_enabled(server, admin, "ui-api-only", False)
    set_enabled(server, admin, "ui-view-ok", False)


def test_logs_follow_search_and_download(new_page, server, admin, tmp_path) -> None:
    set_enabled(server, admin, "hello-python", True)
    cookie, csrf = admin
    page = new_page()
    sign_in(page)
    page.goto("/#/plugins/hello-python/logs")
    rows = page.get_by_test_id("log-row")
    expect(rows.first).to_be_visible()

    # Follow live: a line logged after the page loaded shows up without a click.
    page.get_by_test_id("log-follow").check()
    status, data = server.json(
        "POST", "/api/plugins/route/hello/counter/increment", cookie=cookie, csrf=csrf
    )
    assert status == 200
    marker = f"count={data['count']} "
    expect(page.get_by_test_id("log-table")).to_contain_text(marker)
    page.get_by_test_id("log-follow").uncheck()

    # Search: only matching lines, with a count.
    needle = marker.strip()  # "count=N": the search looks in the fields too
    page.get_by_test_id("log-search").fill(needle)
    expect(page.get_by_test_id("log-search-note")).to_contain_text(f"match “{needle}”")
    expect(rows.first).to_contain_text("counter incremented")
    for i in range(rows.count()):
        assert needle in rows.nth(i).inner_text()
    page.get_by_test_id("log-search").fill("no-such-text-anywhere-42")
    expect(page.get_by_test_id("log-search-note")).to_contain_text("0 lines match")
    page.get_by_test_id("log-search").fill("")
    expect(page.get_by_test_id("log-search-note")).to_be_hidden()

    # Download: the log as JSON lines.
    with page.expect_download() as info:
        page.get_by_test_id("log-download").click()
    path = tmp_path / "log.jsonl"
    info.value.save_as(path)
    assert info.value.suggested_filename == "hello-python-log.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines and all("message" in e and "level" in e for e in lines)
    assert any(e.get("count") == data["count"] for e in lines)


def test_users_actions_reachable_at_390_and_password_reset(new_page, server, admin, shots) -> None:
    add_user(server, admin, "resetme", "before-pass-111")
    page = new_page(width=NARROW, height=844)
    sign_in(page)
    page.goto("/#/users")
    row = page.get_by_role("row").filter(has_text="resetme")
    expect(row).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= NARROW, f"users page is {width}px wide at {NARROW}px"
    for name in ("Make resetme an admin", "Set a new password for resetme", "Delete user resetme"):
        button = row.get_by_role("button", name=name)
        expect(button).to_be_visible()
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= NARROW, (name, box)
        # Not clipped by a scrolling ancestor either.
        assert button.evaluate(
            """(el) => { const r = el.getBoundingClientRect();
                         const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
                         return el === hit || el.contains(hit); }"""
        ), name
    page.screenshot(path=shots / "09b-users-390.png", full_page=True, animations="disabled")

    # Admin reset: the new password works, the old one no longer does.
    row.get_by_role("button", name="Set a new password for resetme").click()
    page.get_by_role("textbox", name="New password for resetme").fill("after-pass-222")
    page.get_by_role("button", name="Save password").click()
    expect(page.get_by_test_id("toast").filter(has_text="resetme")).to_contain_text("changed")
    status, _, _ = server.request(
        "POST", "/api/auth/login", {"username": "resetme", "password": "after-pass-222"}
    )
    assert status == 200
    status, _, _ = server.request(
        "POST", "/api/auth/login", {"username": "resetme", "password": "before-pass-111"}
    )
    assert status == 401


def test_tokens_create_shown_once_list_and_revoke(new_page, server, shots) -> None:
    page = new_page()
    sign_in(page)
    page.get_by_test_id("nav-tokens").click()
    page.get_by_label("Token name").fill("ci-monitor")
    page.get_by_role("button", name="Create token").click()
    secret = page.get_by_test_id("token-secret")
    expect(secret).to_have_value(re.compile(r".{16,}"))
    token = secret.input_value()
    row = page.get_by_test_id("token-row").filter(has_text="ci-monitor")
    expect(row).to_be_visible()
    page.screenshot(path=shots / "12-tokens.png", animations="disabled")
    # The token works as a bearer token, and the secret is not in the list.
    status, _, _ = server.request("GET", "/api/plugins", token=token)
    assert status == 200
    assert token not in page.get_by_test_id("tokens-table").inner_text()
    expect(row.get_by_test_id("token-last-used")).to_have_text("never")
    page.reload()
    expect(page.get_by_test_id("token-secret")).to_have_count(0)  # shown once
    last_used = page.get_by_test_id("token-row").filter(has_text="ci-monitor")
    expect(last_used.get_by_test_id("token-last-used")).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$")
    )

    page.on("dialog", lambda d: d.accept())
    page.get_by_test_id("token-row").filter(has_text="ci-monitor").get_by_role(
        "button", name="Revoke token ci-monitor"
    ).click()
    expect(page.get_by_test_id("token-row").filter(has_text="ci-monitor")).to_have_count(0)
    status, _, _ = server.request("GET", "/api/plugins", token=token)
    assert status == 401


def test_own_password_change_keeps_this_session(new_page, server, admin, console) -> None:
    console.allow("401", "/api/")  # the wrong current password, the ended other session
    add_user(server, admin, "plain2", "plain2-old-pass")
    other = new_page()
    sign_in(other, "plain2", "plain2-old-pass")
    page = new_page()
    sign_in(page, "plain2", "plain2-old-pass")
    page.get_by_test_id("nav-account").click()
    expect(page.get_by_test_id("rescan")).to_have_count(0)
    page.get_by_label("Current password").fill("plain2-old-pass")
    page.get_by_label("New password", exact=True).fill("plain2-new-pass")
    page.get_by_label("New password again").fill("plain2-typo-pass")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_test_id("own-pass-error")).to_contain_text("differ")
    page.get_by_label("Current password").fill("not-my-password")
    page.get_by_label("New password again").fill("plain2-new-pass")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_test_id("own-pass-error")).to_contain_text("current password is wrong")
    page.get_by_label("Current password").fill("plain2-old-pass")
    page.get_by_label("New password", exact=True).fill("plain2-new-pass")
    page.get_by_label("New password again").fill("plain2-new-pass")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_role("status").filter(has_text="Password changed")).to_be_visible()
    expect(page.get_by_label("Current password")).to_have_value("")
    # this browser stays signed in: its re-issued session's CSRF token takes a second change
    page.get_by_label("Current password").fill("plain2-new-pass")
    page.get_by_label("New password", exact=True).fill("plain2-third-pass")
    page.get_by_label("New password again").fill("plain2-third-pass")
    page.get_by_role("button", name="Change password").click()
    expect(page.get_by_label("Current password")).to_have_value("")  # cleared on success
    expect(page.get_by_test_id("own-pass-error")).to_be_hidden()
    page.reload()
    expect(page.get_by_test_id("account-info")).to_contain_text("plain2")
    # ...the other one was signed out, and the new password signs in
    other.reload()
    expect(other.get_by_label("Username")).to_be_visible()
    sign_in(other, "plain2", "plain2-third-pass")


def test_system_page_health_states_and_rates(new_page, server, admin, shots) -> None:
    set_enabled(server, admin, "hello-python", True)
    cookie, _ = admin
    page = new_page()
    sign_in(page)
    page.get_by_test_id("nav-system").click()
    expect(page.get_by_test_id("health-supervisor")).to_contain_text("Answers")
    expect(page.get_by_test_id("health-web")).to_contain_text("Answers")
    expect(page.get_by_test_id("health-version")).to_contain_text(toru_version)
    expect(page.get_by_test_id("health-uptime")).to_contain_text(re.compile(r"\d"))
    expect(page.get_by_test_id("health-store")).to_have_text(re.compile("OK"))
    running = sum(1 for p in all_plugins(server, admin) if p["state"] == "running")
    expect(page.get_by_test_id("state-count-running")).to_contain_text(str(running))
    expect(page.get_by_test_id("state-count-invalid")).to_contain_text("1")
    expect(page.get_by_test_id("system-versions")).to_contain_text("Hello Python")
    for _ in range(30):
        server.request("GET", "/api/plugins/route/hello/counter", cookie=cookie)
    chart = page.get_by_test_id("system-chart").locator(".spark")
    expect(chart).to_have_attribute("aria-label", re.compile(r"Requests \d+\.\d\d/s, Errors"))
    expect(chart.locator("polyline.rate-requests")).to_have_count(1)
    page.screenshot(path=shots / "13-system.png", full_page=True, animations="disabled")


def test_dark_mode_follows_system_and_toggle_is_remembered(new_page, shots) -> None:
    page = new_page(color_scheme="dark")
    sign_in(page)
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "dark")
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(13, 17, 23)", bg
    page.screenshot(path=shots / "14-dark-manager.png", full_page=True, animations="disabled")
    toggle = page.get_by_test_id("theme-toggle")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    toggle.click()
    expect(html).to_have_attribute("data-theme", "light")
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")  # the choice beats the system's
    page.get_by_test_id("theme-toggle").click()
    page.reload()
    expect(html).to_have_attribute("data-theme", "dark")


def test_manager_search_filter_sort_compact_and_bulk(new_page, server, admin, shots) -> None:
    for pid in ("hello-python", "raw-python", "system-info"):
        set_enabled(server, admin, pid, False)
    page = new_page()
    sign_in(page)
    grid = page.get_by_test_id("plugin-grid")
    visible = grid.locator("article.card:visible")
    page.get_by_test_id("plugin-search").fill("python")
    expect(visible).to_have_count(2)  # Hello Python, Raw Python
    page.get_by_test_id("plugin-search").fill("/system")
    expect(visible).to_have_count(1)
    page.get_by_test_id("plugin-search").fill("")
    page.get_by_test_id("plugin-filter").select_option("attention")
    expect(page.get_by_test_id("plugin-card-ui-bad-meta")).to_be_visible()
    expect(page.get_by_test_id("plugin-card-hello-python")).to_be_hidden()
    page.get_by_test_id("plugin-filter").select_option("all")
    page.get_by_test_id("plugin-sort").select_option("state")
    expect(visible.first).to_have_attribute("data-testid", "plugin-card-ui-bad-meta")
    page.get_by_test_id("plugin-sort").select_option("name")

    # Bulk: select two, enable both, then disable both.
    page.get_by_test_id("select-hello-python").check()
    page.get_by_test_id("select-system-info").check()
    expect(page.get_by_test_id("selected-count")).to_have_text("2 selected")
    page.get_by_test_id("bulk-enable").click()
    expect(page.get_by_test_id("toast").filter(has_text="2 plugins enabled")).to_be_visible()
    for pid in ("hello-python", "system-info"):
        card = page.get_by_test_id(f"plugin-card-{pid}")
        expect(card.get_by_role("switch")).to_have_attribute("aria-checked", "true")
        expect(card.get_by_test_id("plugin-state")).to_have_text("Running")
    page.get_by_test_id("bulk-disable").click()
    expect(page.get_by_test_id("toast").filter(has_text="2 plugins disabled")).to_be_visible()
    assert not plugin_info(server, admin, "hello-python")["enabled"]
    assert not plugin_info(server, admin, "system-info")["enabled"]

    # Compact list, remembered across a reload.
    page.get_by_test_id("view-toggle").click()
    expect(grid).to_have_class(re.compile(r"\bcompact\b"))
    page.screenshot(path=shots / "02c-plugin-manager-compact.png", animations="disabled")
    page.reload()
    expect(page.get_by_test_id("plugin-grid")).to_have_class(re.compile(r"\bcompact\b"))
    page.get_by_test_id("view-toggle").click()


PAGES = [
    ("plugins", "#/plugins", "plugin-grid"),
    ("details", "#/plugins/hello-python", "metadata"),
    ("logs", "#/plugins/hello-python/logs", "log-row"),
    ("view", "#/p/hello-python", "hello-count"),
    ("system", "#/system", "health-supervisor"),
    ("users", "#/users", "users-table"),
    ("tokens", "#/tokens", "tokens-table"),
    ("account", "#/account", "account-info"),
]


@pytest.mark.parametrize("width", [WIDE, NARROW])
def test_every_page_photographed_without_sideways_scroll(
    new_page, server, admin, shots, width
) -> None:
    set_enabled(server, admin, "hello-python", True)
    page = new_page(width=width, height=860)
    sign_in(page)
    for name, route, ready in PAGES:
        page.goto(f"/{route}")
        expect(page.get_by_test_id(ready).first).to_be_visible()
        page.wait_for_load_state("networkidle")
        scroll = page.evaluate("document.documentElement.scrollWidth")
        assert scroll <= width, f"{route} is {scroll}px wide at {width}px"
        assert_controls_labelled(page)
        page.screenshot(
            path=shots / f"page-{name}-{width}.png", full_page=True, animations="disabled"
        )


CSP = "script-src 'self'; object-src 'none'; base-uri 'none'"


def test_runs_under_script_src_self_csp(new_page, server, admin, console) -> None:
    """No inline script or handler: every page works with the CSP a proxy may add."""
    console.allow("Executing inline script violates", "")  # the probe below, on purpose
    set_enabled(server, admin, "hello-python", True)
    page = new_page()
    page.add_init_script(
        "window.__cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI));"
    )

    def with_csp(route) -> None:
        resp = route.fetch()
        route.fulfill(response=resp, headers={**resp.headers, "content-security-policy": CSP})

    page.route(re.compile(r"/(index\.html)?(\?.*)?$"), with_csp)
    sign_in(page)
    for _name, route, ready in PAGES:
        page.goto(f"/{route}")
        expect(page.get_by_test_id(ready).first).to_be_visible()
    page.get_by_test_id("theme-toggle").click()
    assert page.evaluate("window.__cspViolations") == []
    # The policy was in force: an inline script is refused under it.
    assert page.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.__inlineRan = true'; document.head.append(s);
                   return window.__inlineRan === undefined; }"""
    )


def test_damaged_plugin_state_shows_a_banner_until_the_copy_is_deleted(
    new_page, server, admin, shots
) -> None:
    state = server.home / "plugins" / ".metadata" / "config.json"
    set_enabled(server, admin, "hello-python", True)  # the file exists and lists plugins
    text = state.read_text()
    state.write_text(text[: text.rindex('"enabled"') + 12])  # truncated in the last entry
    set_enabled(server, admin, "hello-python", True)  # the next write finds it damaged
    [kept] = state.parent.glob("config.json.corrupt-*")
    page = new_page()
    sign_in(page)
    banner = page.get_by_test_id("warnings").get_by_role("alert")
    expect(banner).to_contain_text(kept.name)
    expect(banner).to_have_attribute("data-code", "plugin_state_corrupt")
    expect(page.get_by_test_id("plugin-card-hello-python")).to_be_visible()
    page.screenshot(path=shots / "09-plugin-state-warning.png", animations="disabled")
    kept.unlink()
    expect(banner).to_have_count(0)


def test_details_show_isolation_and_limits(new_page, server, admin) -> None:
    set_enabled(server, admin, "hello-python", True)
    info = plugin_info(server, admin, "hello-python")
    page = new_page()
    sign_in(page)
    page.goto("/#/plugins/hello-python")
    meta = page.get_by_test_id("metadata")
    expected = info["cgroup"]["path"] or "process group only"
    expect(meta).to_contain_text(expected)
    limit = info["cgroup"]["limits"]["memory_max"]
    row = page.get_by_test_id("limit-memory_max")
    expect(row).to_contain_text("512 MiB")
    if not limit["enforced"]:  # this host: said plainly, with the reason
        expect(row).to_contain_text(f"not enforced: {limit['reason']}")
