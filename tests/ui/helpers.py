"""Helpers of the browser tests: arrange state through the API, sign in through the form."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.servers import ToruServer


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


def add_user(server: ToruServer, admin, username: str, password: str, role: str = "user") -> None:
    """Create a user through the API (already there is fine: modules share one server)."""
    cookie, csrf = admin
    status, data = server.json(
        "POST",
        "/api/users",
        {"username": username, "password": password, "role": role},
        cookie=cookie,
        csrf=csrf,
    )
    assert status in (200, 201, 409), (status, data)
