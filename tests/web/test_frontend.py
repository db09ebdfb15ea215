"""``frontend.Frontend`` serves the plugin routes exactly as the Falcon app does.

``create_app`` returns the ``Frontend``; its ``.app`` is the whole Falcon app, which still
routes the plugin-route templates to the same resource. The same requests go through both
(in-process, falcon.testing's ASGI client, a fake control client) and every answer must be
the same: status, every header, body, and the metric samples the request adds. The matrix
covers what the lean path could get wrong: methods (HEAD included), no/bad/good bearer
tokens, sessions with and without their CSRF token, 400 bad_path, 404, 413 (Content-Length
and chunked), 502/503 (+Retry-After)/504 from the control client,
a 1xx and a 204 from the plugin, bad plugin headers, Set-Cookie naming Toru's cookie, a
bug (JSON 500), the trusted-proxy forwarding headers, and paths Falcon routes elsewhere.
End to end through gunicorn: tests/web/test_e2e_api.py, test_response_headers.py.
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import falcon.testing as ft
import pytest
from prometheus_client import REGISTRY

from tests.web.test_app_unit import ADMIN_PW, USER_PW, FakeControl
from toru.accounts import Accounts
from toru.config import load_config
from toru.errors import BadGateway, GatewayTimeout, NotFound, SupervisorUnavailable, Unavailable
from toru.store import Store
from toru.wsgi import frontend, metrics
from toru.wsgi.app import create_app


class CookieControl(FakeControl):
    """The unit tests' fake, plus a reply that sets cookies (Toru's among them)."""

    async def http(self, route, method, path, headers, body):
        if route == "/hello" and path == "/cookies":
            return SimpleNamespace(
                status=200,
                headers={"Set-Cookie": "toru_session=evil; Path=/", "set-cookie": "theme=dark"},
                body=b"c",
            )
        if route == "/hello" and path == "/framed":
            return SimpleNamespace(
                status=200,
                headers={"X-Frame-Options": "SAMEORIGIN", "Content-Type": "text/html"},
                body=b"<p>",
            )
        return await super().http(route, method, path, headers, body)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    web = tmp_path_factory.mktemp("webapp")
    (web / "index.html").write_text("<!doctype html><title>Toru</title>")
    overrides = {"body_limit": 1024, "trusted_proxies": "127.0.0.1"}
    config = load_config(home, overrides, env={})
    store = Store(config.db_path)
    store.migrate()
    accounts = Accounts(store)
    accounts.ensure_first_admin(ADMIN_PW)
    accounts.create_user("alice", USER_PW, "user")
    control = CookieControl()
    app = create_app(config, control=control, accounts=accounts, webapp_dir=web)
    assert isinstance(app, frontend.Frontend)
    lean, falcon_only = ft.TestClient(app), ft.TestClient(app.app)
    r = lean.simulate_post("/api/auth/login", json={"username": "alice", "password": USER_PW})
    session = (r.cookies["toru_session"].value, r.json["csrf_token"])
    token = accounts.create_token("admin", "unit")["token"]
    return SimpleNamespace(
        lean=lean, falcon=falcon_only, control=control, session=session, token=token
    )


def _samples() -> dict[tuple, float]:
    metrics.flush()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in REGISTRY.collect()
        if family.name.startswith("toru_")
        for s in family.samples
        # durations differ (so do their buckets), counts must not
        if not s.name.endswith(("_created", "_sum"))
        and (not s.name.endswith("_bucket") or s.labels["le"] == "+Inf")
    }


def _answer(client, control, error, method, path, **kw):
    control.http_error = error
    before = _samples()
    try:
        r = client.simulate_request(method, path, **kw)
    finally:
        control.http_error = None
    after = _samples()
    added = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}
    return r.status_code, sorted(r.headers.items()), r.content, added


def _both(env, method, path, error=None, **kw):
    lean = _answer(env.lean, env.control, error, method, path, **kw)
    assert lean == _answer(env.falcon, env.control, error, method, path, **kw), (method, path)
    return lean


METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
PATHS = [
    "/api/plugins/route/hello/x?a=1&b=%2F",
    "/api/plugins/route/hello",
    "/api/plugins/route/hello/",
    "/api/plugins/route/hello/nocontent",
    "/api/plugins/route/hello/continue",
    "/api/plugins/route/hello/badheaders",
    "/api/plugins/route/hello/cookies",
    "/api/plugins/route/hello/framed",
    "/api/plugins/route/hello/bug",
    "/api/plugins/route/nope/x",
    "/api/plugins/route/hello/%2e%2e/x",
    "/api/plugins/route/",
    "/api/plugins/route//x",
]


def _auth(env, who):
    cookie, csrf = env.session
    return {
        "none": {},
        "bad token": {"headers": {"Authorization": "Bearer toru_nope"}},
        "basic": {"headers": {"Authorization": "Basic eA=="}},
        "token": {"headers": {"Authorization": f"Bearer {env.token}"}},
        "session": {"cookies": {"toru_session": cookie}, "headers": {"X-CSRF-Token": csrf}},
        "session, no csrf": {"cookies": {"toru_session": cookie, "theme": "dark"}},
    }[who]


WHO = ["none", "bad token", "basic", "token", "session", "session, no csrf"]


@pytest.mark.parametrize("method", METHODS)
def test_methods_paths_and_credentials(env, method):
    for path, who in itertools.product(PATHS, WHO):
        _both(env, method, path, **_auth(env, who))


@pytest.mark.parametrize(
    "error",
    [
        GatewayTimeout("plugin timed out"),
        BadGateway("plugin died"),
        SupervisorUnavailable("supervisor down", retry_after=3),
        Unavailable("plugin starting", retry_after=2),
        NotFound("no plugin serves this route"),
        ConnectionResetError("reset"),
    ],
)
def test_control_errors(env, error):
    for method in ("GET", "HEAD", "POST"):
        status = _both(env, method, "/api/plugins/route/hello/x", error, **_auth(env, "token"))[0]
        assert status >= 500 or status == 404


def test_bodies_limits_and_forwarding_headers(env):
    token = _auth(env, "token")["headers"]
    url = "/api/plugins/route/hello/x"
    status, _, content, _ = _both(env, "POST", url, body=b"x" * 100, headers=token)
    assert status == 201 and b"78" * 100 in content  # the body reached the plugin
    assert _both(env, "POST", url, body=b"x" * 2000, headers=token)[0] == 413
    chunked = {**token, "Transfer-Encoding": "chunked"}
    assert _both(env, "PUT", url, body=b"y" * 2000, headers=chunked)[0] == 413
    proxied = {**token, "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    for peer in ("127.0.0.1", "198.51.100.7"):
        status, _, content, _ = _both(env, "GET", url, headers=proxied, remote_addr=peer)
        assert status == 201 and b"X-Forwarded-Proto" in content


def test_other_routes_still_go_to_falcon(env):
    token = _auth(env, "token")
    for path in ("/api/plugins/route", "/api/plugins", "/healthz", "/api/nope", "/"):
        assert env.lean.simulate_get(path, **token).status_code in (200, 404)
    # a method the resource has no responder for: Falcon's 405 on both
    assert _both(env, "TRACE", "/api/plugins/route/hello/x", **token)[0] == 405
