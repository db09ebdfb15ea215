"""In-process tests of the Falcon ASGI app with a fake control client (no supervisor, no
gunicorn), through falcon.testing's ASGI client.

These pin the web tier's own rules fast: auth levels, CSRF, error mapping, traversal, body
limits, header forwarding, static files. The same behaviour is checked end to end against a
real ``toru serve`` in the other test modules.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import falcon.testing as ft
import pytest

from toru.accounts import Accounts
from toru.config import load_config
from toru.errors import BadGateway, GatewayTimeout, NotFound, SupervisorUnavailable, Unavailable
from toru.store import Store
from toru.wsgi.app import create_app

ADMIN_PW = "admin-pass-123"
USER_PW = "user-pass-456"


class FakeControl:
    """Answers control ops from a table; ``http`` echoes what it was given."""

    def __init__(self) -> None:
        self.http_error: Exception | None = None
        self.down = False
        self.calls: list[tuple] = []

    async def call(self, op, args=None, timeout=None):
        self.calls.append((op, args))
        if self.down:
            raise SupervisorUnavailable("supervisor not reachable")
        if op == "list":
            return [{"id": "hello-python", "route": "/hello", "enabled": True}]
        if op == "ping":
            return {"ok": True}
        if op == "get" and args["plugin"] != "hello-python":
            raise NotFound("no plugin")
        if op == "http":
            return {"status": 200, "headers": {}, "body": "window.ToruPlugins={}"}
        return {"op": op, "args": args}

    async def http(self, route, method, path, headers, body):
        if self.http_error is not None:
            raise self.http_error
        if route != "/hello":
            raise NotFound("no plugin serves this route")
        if path == "/badheaders":
            bad = {"X-Bad\nName": "v", "X-Split": "a\r\nSet-Cookie: x=1", "X-Good": "1"}
            return SimpleNamespace(status=200, headers=bad, body=b"ok")
        if path == "/nocontent":
            return SimpleNamespace(status=204, headers={"X-Good": "1"}, body=b"")
        if path == "/bug":
            raise RuntimeError("a bug in the web tier")
        if path == "/continue":
            return SimpleNamespace(status=100, headers={}, body=b"")
        if type(body) is list:  # the chunks the server handed over (read_body_parts)
            body = b"".join(body)
        payload = {"method": method, "path": path, "headers": headers, "body": body.hex()}
        return SimpleNamespace(
            status=201,
            headers={"Content-Type": "application/json", "Connection": "close", "X-P": "1"},
            body=json.dumps(payload).encode(),
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    web = tmp_path_factory.mktemp("webapp")
    (web / "index.html").write_text("<!doctype html><title>Toru</title>")
    (web / "app.js").write_text("console.log(1)")
    # a proxy on loopback named explicitly (the default trusts no address: test_trust.py)
    overrides = {"body_limit": 1024, "login_rate": 3, "trusted_proxies": "127.0.0.1"}
    config = load_config(home, overrides, env={})
    store = Store(config.db_path)
    store.migrate()
    accounts = Accounts(store, login_rate=3)
    accounts.ensure_first_admin(ADMIN_PW)
    accounts.create_user("alice", USER_PW, "user")
    control = FakeControl()
    app = create_app(config, control=control, accounts=accounts, webapp_dir=web)
    client = ft.TestClient(app)
    ns = SimpleNamespace(client=client, control=control, accounts=accounts)
    r = client.simulate_post("/api/auth/login", json={"username": "admin", "password": ADMIN_PW})
    ns.admin = (r.cookies["toru_session"].value, r.json["csrf_token"])
    r = client.simulate_post("/api/auth/login", json={"username": "alice", "password": USER_PW})
    ns.user = (r.cookies["toru_session"].value, r.json["csrf_token"])
    ns.token = accounts.create_token("admin", "unit")["token"]
    return ns


def _as(who, csrf=True, cookies=None, **headers):
    cookie, token = who
    h = dict(headers)
    if csrf:
        h["X-CSRF-Token"] = token
    return {"cookies": {"toru_session": cookie, **(cookies or {})}, "headers": h}


def test_error_shape_and_unknown_paths(env):
    r = env.client.simulate_get("/api/nope")
    assert r.status_code == 404
    assert set(r.json) == {"error", "message"}
    r = env.client.simulate_put("/healthz")
    assert r.status_code == 405 and r.json["error"] == "method_not_allowed"


def test_login_bad_input_is_400(env):
    c = env.client
    assert c.simulate_post("/api/auth/login", body="{not json").status_code == 400
    assert c.simulate_post("/api/auth/login", json=[1, 2]).status_code == 400
    assert (
        c.simulate_post("/api/auth/login", json={"username": 1, "password": "x"}).status_code == 400
    )
    assert c.simulate_post("/api/auth/login", json={"username": "admin"}).status_code == 400


def test_login_cookie_flags_and_me(env):
    r = env.client.simulate_post("/api/auth/login", json={"username": "alice", "password": USER_PW})
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert r.json["user"] == {"username": "alice", "role": "user"}
    me = env.client.simulate_get("/api/auth/me", **_as(env.user, csrf=False))
    assert me.status_code == 200 and me.json["csrf_token"] == env.user[1]


def test_secure_cookie_behind_tls_proxy(env):
    r = env.client.simulate_post(
        "/api/auth/login",
        json={"username": "alice", "password": USER_PW},
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "10.1.2.3"},
        remote_addr="127.0.0.1",
    )
    assert "Secure" in r.headers["set-cookie"]


def test_roles_and_csrf(env):
    c = env.client
    assert c.simulate_get("/api/users").status_code == 401
    assert c.simulate_get("/api/users", **_as(env.user)).status_code == 403
    assert c.simulate_get("/api/users", **_as(env.admin)).status_code == 200
    # session + unsafe method without the CSRF header -> 403, with it -> ok
    r = c.simulate_post("/api/plugins/hello-python/enable", **_as(env.admin, csrf=False))
    assert r.status_code == 403 and r.json["error"] == "csrf_failed"
    r = c.simulate_post(
        "/api/plugins/hello-python/enable", **_as(env.admin, csrf=False, **{"X-CSRF-Token": "x"})
    )
    assert r.status_code == 403
    assert c.simulate_post("/api/plugins/hello-python/enable", **_as(env.admin)).status_code == 200
    # bearer needs no CSRF
    h = {"Authorization": f"Bearer {env.token}"}
    assert c.simulate_post("/api/plugins/hello-python/enable", headers=h).status_code == 200
    assert (
        c.simulate_get("/api/plugins", headers={"Authorization": "Bearer nope"}).status_code == 401
    )
    assert c.simulate_get("/api/plugins", headers={"Authorization": "Basic x"}).status_code == 401


def test_proxy_forwarding(env):
    r = env.client.simulate_post(
        "/api/plugins/route/hello/echo/a%20b",
        query_string="x=1&y=%2F",
        body=b"\xff\x00bin",
        remote_addr="10.9.8.7",
        **_as(
            env.user,
            cookies={"other": "1"},
            **{
                "X-Forwarded-For": "6.6.6.6",
                "X-Toru-Probe": "1",
                "Connection": "keep-alive, X-Secret",
                "X-Secret": "s",
                "Content-Type": "application/octet-stream",
            },
        ),
    )
    assert r.status_code == 201
    assert r.headers["x-p"] == "1" and "connection" not in r.headers
    got = r.json
    assert got["method"] == "POST"
    assert got["path"] == "/echo/a%20b?x=1&y=%2F"
    assert bytes.fromhex(got["body"]) == b"\xff\x00bin"
    h = got["headers"]
    assert h["X-Forwarded-For"] == "10.9.8.7"  # untrusted peer: its own address, chain dropped
    assert h["X-Toru-User"] == "alice" and "X-Toru-Probe" not in h
    assert h["Cookie"] == "other=1"
    assert "X-Secret" not in h and "Authorization" not in h and "X-Csrf-Token" not in h


def test_proxy_trusted_proxy_chain(env):
    r = env.client.simulate_get(
        "/api/plugins/route/hello/x",
        remote_addr="127.0.0.1",
        headers={
            "Authorization": f"Bearer {env.token}",
            "X-Forwarded-For": "203.0.113.5",
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "panel.example",
        },
    )
    h = r.json["headers"]
    assert h["X-Forwarded-For"] == "203.0.113.5, 127.0.0.1"
    assert h["X-Forwarded-Proto"] == "https" and h["X-Forwarded-Host"] == "panel.example"
    assert "Authorization" not in h


@pytest.mark.parametrize(
    "path",
    [
        "/api/plugins/route/hello/../x",
        "/api/plugins/route/hello/%2e%2e/x",
        "/api/plugins/route/hello/a%2Fb",
        "/api/plugins/route/hello/a%5cb",
        "/api/plugins/route/hello/%252e%252e/x",
        "/api/plugins/route/..",
        "/api/plugins/route/%2e%2e/hello",
    ],
)
def test_proxy_traversal_is_400(env, path):
    r = env.client.simulate_get(path, **_as(env.user))
    assert r.status_code == 400, r.text


@pytest.mark.parametrize(
    "exc,status",
    [
        (GatewayTimeout("slow"), 504),
        (BadGateway("died"), 502),
        (Unavailable("restarting", retry_after=3), 503),
        (SupervisorUnavailable("down"), 503),
    ],
)
def test_proxy_error_statuses(env, exc, status):
    env.control.http_error = exc
    try:
        r = env.client.simulate_get("/api/plugins/route/hello/x", **_as(env.user))
    finally:
        env.control.http_error = None
    assert r.status_code == status and r.json["error"] == exc.code
    if status == 503:
        assert int(r.headers["retry-after"]) >= 1


def test_unknown_route_404(env):
    r = env.client.simulate_get("/api/plugins/route/nope/x", **_as(env.user))
    assert r.status_code == 404


def test_body_limit_413(env):
    r = env.client.simulate_post("/api/plugins/route/hello/x", body=b"x" * 2000, **_as(env.user))
    assert r.status_code == 413 and r.json["error"] == "payload_too_large"


def test_kv_validation(env):
    c = env.client
    url = "/api/plugins/hello-python/kv"
    assert (
        c.simulate_post(url, json={"action": "nuke", "key": "a"}, **_as(env.user)).status_code
        == 400
    )
    assert (
        c.simulate_post(url, json={"action": "set", "key": "a"}, **_as(env.user)).status_code == 400
    )
    assert (
        c.simulate_post(
            url, json={"action": "set", "key": "a", "value": 1}, **_as(env.user)
        ).status_code
        == 400
    )
    r = c.simulate_post(url, json={"action": "set", "key": "a", "value": "v"}, **_as(env.user))
    assert r.status_code == 200 and r.json["args"]["value"] == "v"


def test_query_validation(env):
    c = env.client
    assert (
        c.simulate_get("/api/plugins/hello-python/logs?page=x", **_as(env.user)).status_code == 400
    )
    assert (
        c.simulate_get("/api/plugins/hello-python/logs?level=loud", **_as(env.user)).status_code
        == 400
    )
    assert (
        c.simulate_get("/api/plugins/hello-python/events?limit=0", **_as(env.user)).status_code
        == 400
    )
    assert c.simulate_get("/api/plugins/bad..id", **_as(env.user)).status_code == 404


def test_healthz_and_supervisor_down(env):
    assert env.client.simulate_get("/healthz").status_code == 200
    env.control.down = True
    try:
        r = env.client.simulate_get("/healthz")
        assert r.status_code == 503 and r.json["status"] == "unavailable"
        r = env.client.simulate_get("/api/plugins", **_as(env.user))
        assert r.status_code == 503 and r.headers["retry-after"]
    finally:
        env.control.down = False


def test_metrics_access(env):
    c = env.client
    assert c.simulate_get("/metrics", remote_addr="127.0.0.1").status_code == 200
    assert c.simulate_get("/metrics", remote_addr="10.0.0.1").status_code == 401
    r = c.simulate_get("/metrics", remote_addr="127.0.0.1", headers={"X-Forwarded-For": "10.0.0.1"})
    assert r.status_code == 401  # a loopback peer that is a proxy for someone else
    r = c.simulate_get("/metrics", headers={"Authorization": f"Bearer {env.token}"})
    assert r.status_code == 200 and b"toru_http_requests_total" in r.content


def test_static_etag_and_spa_fallback(env):
    c = env.client
    r = c.simulate_get("/")
    assert r.status_code == 200 and r.headers["cache-control"] == "no-cache"
    etag = r.headers["etag"]
    assert c.simulate_get("/", headers={"If-None-Match": etag}).status_code == 304
    assert c.simulate_get("/plugins/hello-python").text == r.text  # SPA fallback
    assert "javascript" in c.simulate_get("/app.js").headers["content-type"]
    assert c.simulate_get("/missing.js").status_code == 404
    assert c.simulate_get("/../etc/passwd").status_code in (404, 200)
    assert b"root:" not in c.simulate_get("/..%2f..%2fetc/passwd").content


def test_users_and_tokens(env):
    c = env.client
    r = c.simulate_post(
        "/api/users", json={"username": "carol", "password": "short"}, **_as(env.admin)
    )
    assert r.status_code == 400
    r = c.simulate_post(
        "/api/users",
        json={"username": "carol", "password": "carol-pass-1", "role": "user"},
        **_as(env.admin),
    )
    assert r.status_code == 201
    r = c.simulate_post(
        "/api/users",
        json={"username": "carol", "password": "carol-pass-1", "role": "user"},
        **_as(env.admin),
    )
    assert r.status_code == 409
    r = c.simulate_post("/api/auth/tokens", json={"name": "ci"}, **_as(env.admin))
    assert r.status_code == 201 and r.json["token"].startswith("toru_")
    tid = r.json["id"]
    assert (
        c.simulate_post("/api/auth/tokens", json={"name": "x"}, **_as(env.user)).status_code == 403
    )
    assert c.simulate_delete(f"/api/auth/tokens/{tid}", **_as(env.admin)).status_code == 200
    assert c.simulate_delete(f"/api/auth/tokens/{tid}", **_as(env.admin)).status_code == 404
    assert c.simulate_delete("/api/users/carol", **_as(env.admin)).status_code == 200
    assert c.simulate_delete("/api/users/carol", **_as(env.admin)).status_code == 404
    r = c.simulate_delete("/api/users/admin", **_as(env.admin))
    assert r.status_code == 409  # the last admin stays


def test_login_rate_limit(env):
    c = env.client
    for _ in range(3):
        r = c.simulate_post(
            "/api/auth/login", json={"username": "ratelimited", "password": "wrong-pass"}
        )
        assert r.status_code == 401
    r = c.simulate_post(
        "/api/auth/login", json={"username": "ratelimited", "password": "wrong-pass"}
    )
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1


def test_plugin_answers_are_sanitised(env):
    r = env.client.simulate_get("/api/plugins/route/hello/badheaders", **_as(env.user))
    assert r.status_code == 200 and r.headers["x-good"] == "1"
    assert "x-split" not in r.headers and "set-cookie" not in r.headers
    r = env.client.simulate_get("/api/plugins/route/hello/nocontent", **_as(env.user))
    assert r.status_code == 204 and r.content == b""
    r = env.client.simulate_get("/api/plugins/route/hello/continue", **_as(env.user))
    assert r.status_code == 502


def test_unexpected_exception_is_json_500(env, caplog):
    r = env.client.simulate_get("/api/plugins/route/hello/bug", **_as(env.user))
    assert r.status_code == 500
    assert r.json == {"error": "internal_error", "message": "internal server error (logged)"}
    assert "a bug in the web tier" in caplog.text
    assert env.client.simulate_get("/healthz").status_code == 200


def test_lone_surrogates_are_400(env):
    for path, body in [
        ("/api/auth/login", b'{"username": "\\ud800", "password": "whatever-1"}'),
        ("/api/users", b'{"username": "bob", "password": "\\udc00aaaaaaaa"}'),
        ("/api/auth/tokens", b'{"name": "\\udc00"}'),
        ("/api/plugins/hello-python/kv", b'{"action": "get", "key": "\\ud800"}'),
    ]:
        r = env.client.simulate_post(
            path,
            body=body,
            headers={"Authorization": f"Bearer {env.token}", "Content-Type": "application/json"},
        )
        assert r.status_code == 400, (path, r.text)


def test_forwarded_requests_are_in_the_proxy_metrics_only(env):
    """A forwarded request is counted and timed once, by plugin (docs/operations.md)."""
    from prometheus_client import REGISTRY

    from toru.wsgi import metrics

    tmpl = "/api/plugins/route/{route}/{rest:path}"

    def values():
        metrics.flush()  # this process's pending updates, as /metrics does before collecting

        def v(name, **labels):
            return REGISTRY.get_sample_value(name, labels) or 0.0

        return (
            v("toru_http_requests_total", method="GET", route=tmpl, status="201"),
            v("toru_http_request_duration_seconds_count", method="GET", route=tmpl),
            v("toru_proxy_request_duration_seconds_count", plugin="hello-python", code_class="2xx"),
            v("toru_http_requests_total", method="GET", route=tmpl, status="401"),
            v("toru_proxy_inflight", plugin="hello-python"),
        )

    before = values()
    assert env.client.simulate_get("/api/plugins/route/hello/x", **_as(env.user)).status_code == 201
    assert env.client.simulate_get("/api/plugins/route/hello/x").status_code == 401
    after = values()
    assert after[0] == before[0]  # the forwarded one is not in toru_http_*
    assert after[2] == before[2] + 1  # but in the proxy histogram
    assert after[3] == before[3] + 1  # the one refused before forwarding is in toru_http_*
    assert after[1] == before[1] + 1  # (timed: only that one)
    assert after[4] == before[4] == 0
