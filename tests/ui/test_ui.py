"""The web UI in headless Chromium against a real ``toru serve`` with the example plugins.

One server and one browser for the module; every test gets a fresh browser context (its
own cookies) and fails if the page logged a console error or threw, apart from the bundles
that throw on purpose. Screenshots of the main screens go to test-output/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ToruServer
from tests.ui.plugins.build import build as build_broken_plugins

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = pytest.mark.browser

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
WAIT_MS = 20_000  # upper bound for UI changes driven by the 3 s poll; never a timing assertion
USER_PASSWORD = "user-pass-456"
expect.set_options(timeout=WAIT_MS)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def server(example_plugins: dict[str, Path]) -> Iterator[ToruServer]:
    """One ``toru serve`` with the examples and the misbehaving UI plugins, none enabled.

    The long restart backoff keeps a killed plugin visibly down while the test looks at it.
    """
    home = Path(tempfile.mkdtemp(prefix="toru-ui-", dir="/tmp"))
    extra = build_broken_plugins(home / "broken")
    # A generous limit, so the details page has one to show (enforced or not on this host).
    (home / "toru.toml").write_text('[plugins.hello-python.limits]\nmemory_max = "512M"\n')
    srv = ToruServer(
        home,
        plugins=[*example_plugins.values(), *extra.values()],
        workers=2,
        env={
            "TORU_RESTART_BACKOFF": "30",
            "TORU_HEALTH_INTERVAL": "1",
        },
    )
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


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
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

    def make(width: int = 1280, height: int = 860):
        ctx = browser.new_context(viewport={"width": width, "height": height}, base_url=server.url)
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


# ---------------------------------------------------------------------------- helpers


def api(server: ToruServer, admin: tuple[str, str], method: str, path: str, body=None):
    cookie, csrf = admin
    status, data = server.json(method, path, body, cookie=cookie, csrf=csrf)
    assert status < 400, f"{method} {path} -> {status} {data}"
    return data


def set_enabled(server: ToruServer, admin, plugin_id: str, enabled: bool) -> None:
    api(server, admin, "POST", f"/api/plugins/{plugin_id}/{'enable' if enabled else 'disable'}")


def plugin_info(server: ToruServer, admin, plugin_id: str) -> dict:
    data = api(server, admin, "GET", f"/api/plugins/{plugin_id}")
    return data.get("plugin", data) if isinstance(data, dict) else data


def all_plugins(server: ToruServer, admin) -> list[dict]:
    data = api(server, admin, "GET", "/api/plugins")
    return data if isinstance(data, list) else data["plugins"]


def sign_in(page, username: str = "admin", password: str = "admin-pass-123") -> None:
    """Sign in through the form, by keyboard."""
    page.goto("/#/plugins")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_label("Password").press("Enter")
    expect(page.get_by_test_id("user-name")).to_have_text(username)


UNLABELLED_JS = """() => [...document.querySelectorAll('button, a[href], input, select, textarea')]
  .filter((el) => el.getClientRects().length > 0)
  .filter((el) => !(el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')
                    || (el.labels && el.labels.length) || el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 120))"""


def assert_controls_labelled(page) -> None:
    """Every visible control has a name a screen reader can say."""
    assert page.evaluate(UNLABELLED_JS) == []


def sidebar_entry(page, plugin_id: str):
    return page.get_by_test_id(f"nav-plugin-{plugin_id}")


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


def test_plain_user_sees_no_toggles(new_page, server, admin) -> None:
    cookie, csrf = admin
    status, _ = server.json(
        "POST",
        "/api/users",
        {"username": "viewer", "password": USER_PASSWORD, "role": "user"},
        cookie=cookie,
        csrf=csrf,
    )
    assert status in (200, 201, 409), status
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


def test_admin_manages_users(new_page, shots: Path) -> None:
    page = new_page()
    sign_in(page)
    page.get_by_test_id("nav-users").click()
    page.get_by_label("Username").fill("operator2")
    page.get_by_label("Password").fill("operator-pass-789")
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

    page.get_by_test_id("plugin-card-raw-python").get_by_role("link", name="Details").click()
    crash = page.get_by_test_id("crash-details")
    expect(crash).to_be_visible()
    expect(page.get_by_test_id("crash-reason")).to_contain_text("signal")
    expect(crash).to_contain_text(re.compile(r"SIGKILL|\b9\b"))
    expect(page.get_by_test_id("events")).to_contain_text("crashed")
    page.screenshot(path=shots / "05-details-crash.png", full_page=True, animations="disabled")
    expect(page.get_by_test_id("detail-dot")).to_have_attribute("data-health", "red")
    expect(page.get_by_test_id("nav-dot-raw-python")).to_have_attribute("data-health", "red")
    page.screenshot(path=shots / "05-details-crash.png", full_page=True, animations="disabled")
    assert_controls_labelled(page)

    # Its view says it is down, with a way to its logs, instead of a broken page.
    sidebar_entry(page, "raw-python").click()
    panel = page.get_by_test_id("plugin-error")
    expect(panel).to_be_visible()
    expect(panel).to_contain_text("crashed")
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


def test_invalid_plugin_explains_itself(new_page) -> None:
    page = new_page()
    sign_in(page)
    card = page.get_by_test_id("plugin-card-ui-bad-meta")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Invalid")
    expect(card.locator(".card-error")).not_to_be_empty()
    expect(card.get_by_role("switch")).to_be_disabled()
    expect(sidebar_entry(page, "ui-bad-meta")).to_have_count(0)


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
