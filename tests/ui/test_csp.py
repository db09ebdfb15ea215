"""The web UI under Toru's Content-Security-Policy, in headless Chromium (issue 13).

Every screen and every example plugin's view is opened with a listener for
``securitypolicyviolation``: the UI and the bundles must need nothing the policy refuses
(the ``new_page`` fixture fails the test on any console error as well, which is where
Chromium reports a refused script or style). And the policy is really enforced: an inline
script injected into the page does not run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ToruServer
from tests.ui.conftest import serve

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.ui.helpers import set_enabled, sidebar_entry, sign_in  # noqa: E402

pytestmark = pytest.mark.browser

EXAMPLES = ("hello-python", "raw-python", "hello-node", "system-info")
SCREENS = ("/plugins", "/system", "/users", "/tokens", "/account")

COLLECT = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}` +
    ` at ${e.sourceFile || ""}:${e.lineNumber || 0}`);
});
"""


@pytest.fixture(scope="module")
def server(example_plugins: dict[str, Path]) -> Iterator[ToruServer]:
    yield from serve(lambda home: [example_plugins[i] for i in EXAMPLES], {}, "toru-csp-")


def violations(page) -> list[str]:
    return page.evaluate("window.__cspViolations")


def test_every_screen_and_plugin_view_runs_under_the_policy(new_page, server, admin) -> None:
    for plugin_id in EXAMPLES:
        set_enabled(server, admin, plugin_id, True)
    page = new_page()
    page.add_init_script(COLLECT)
    sign_in(page)
    for screen in SCREENS:
        page.goto(f"/#{screen}")
        expect(page.locator("main")).not_to_be_empty()
        page.wait_for_load_state("networkidle")
    for plugin_id in EXAMPLES:
        sidebar_entry(page, plugin_id).click()
        expect(page).to_have_url(re.compile(rf"#/p/{plugin_id}$"))
        container = page.get_by_test_id("plugin-container")
        expect(container).not_to_be_empty()
        expect(page.get_by_test_id("plugin-error")).to_have_count(0)
        page.wait_for_load_state("networkidle")
        page.goto(f"/#/plugins/{plugin_id}/logs")
        expect(page.get_by_test_id("log-row").first).to_be_visible()
    assert violations(page) == []
    # system-info's bundle styles its bars with inline style attributes: still applied
    sidebar_entry(page, "system-info").click()
    bar = page.locator("[data-testid=plugin-container] div[style*='width']").first
    expect(bar).to_be_visible()
    assert violations(page) == []


def test_inline_script_is_refused(new_page, server, console) -> None:
    console.allow("Executing inline script violates", "")  # the refusal this test provokes
    page = new_page()
    page.add_init_script(COLLECT)
    page.goto("/#/plugins")
    expect(page.get_by_label("Username")).to_be_visible()
    ran = page.evaluate(
        """() => {
             window.__inlineRan = false;
             const s = document.createElement("script");
             s.textContent = "window.__inlineRan = true";
             document.body.append(s);  // an allowed inline script runs right here
             return window.__inlineRan;
           }"""
    )
    assert ran is False
    assert any(v.startswith("script-src") for v in violations(page)), violations(page)
