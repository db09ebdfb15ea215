"""End to end against a real ``toru serve``: gunicorn (4 sync workers), the real supervisor and
real plugin executables (the examples plus tests/web/webtest_plugin.py).

Covers T12, T13, T15-T17, every status path (400 401 403 404 413 429 502 503 504), auth and
roles on every endpoint, CSRF, session expiry and logout, 64 concurrent clients against a plugin
that answers out of order, and /metrics + /healthz.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
import threading
import time
from pathlib import Path

import apsw
import pytest

from tests import timing
from tests.servers import ToruServer
from tests.web.procs import alive
from tests.web.procs import poll as _poll
from tests.web.webtest_plugin import install

ADMIN_PW = "admin-pass-123"
USER_PW = "user-pass-456"
BINARY = bytes(range(256))


@pytest.fixture(scope="module")
def srv(example_plugins):
    home = Path(tempfile.mkdtemp(prefix="toru-w-", dir="/tmp"))
    install(home / "plugins")
    plugins = [example_plugins[i] for i in ("hello-python", "raw-python", "system-info")]
    s = ToruServer(
        home,
        plugins=plugins,
        enable=["hello-python", "raw-python", "web-test"],
        workers=4,
        env={
            "TORU_HTTP_TIMEOUT": "2",
            "TORU_RESTART_BACKOFF": "1.5",
            "TORU_LOGIN_RATE": "5",
            "TORU_BODY_LIMIT": "65536",
            "TORU_SHUTDOWN_GRACE": "2",
            # this module's client plays a reverse proxy on loopback (named, as a deployment
            # would); the default, which trusts no address, is tests/web/test_trust.py's
            "TORU_TRUSTED_PROXIES": "127.0.0.1",
        },
        admin_password=ADMIN_PW,
    )
    s.start()
    try:
        s.admin = s.login()
        s.user = s.add_user(s.admin, "alice", USER_PW)
        status, body = s.json(
            "POST", "/api/auth/tokens", {"name": "e2e"}, cookie=s.admin[0], csrf=s.admin[1]
        )
        assert status == 201, body
        s.token = body["token"]
        assert _poll(lambda: _running(s, "web-test") and _running(s, "hello-python"))
        yield s
    finally:
        s.stop()
        shutil.rmtree(home, ignore_errors=True)


def _info(s, plugin_id):
    status, body = s.json("GET", f"/api/plugins/{plugin_id}", token=s.token)
    assert status == 200, body
    return body


def _running(s, plugin_id):
    return _info(s, plugin_id)["state"] == "running"


def _route(s, method, path, body=None, **kw):
    kw.setdefault("token", s.token)
    return s.request(method, "/api/plugins/route" + path, body, **kw)


# --------------------------------------------------------------------------- basics


def test_healthz_static_and_listing(srv):
    status, body = srv.json("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, headers, data = srv.request("GET", "/")
    assert status == 200 and b"<html" in data.lower() and headers["etag"]
    status, plugins = srv.json("GET", "/api/plugins", cookie=srv.user[0])
    assert status == 200
    ids = {p["id"]: p for p in plugins}
    assert ids["hello-python"]["enabled"] and not ids["system-info"]["enabled"]


def test_t16_t17_forwarding(srv):
    """T16/T17: method, path below the route, query, headers, XFF, body; answer comes back."""
    status, _, data = _route(
        srv,
        "PUT",
        "/hello/echo/a/b?x=1&y=two",
        {"k": "v"},
        headers={"X-Custom": "yes", "X-Forwarded-For": "203.0.113.9", "Connection": "close"},
        cookie="toru_session=secret; theme=dark",
    )
    assert status == 200, data
    echo = json.loads(data)
    assert echo["method"] == "PUT"
    assert echo["path"] == "/echo/a/b" and echo["query"] == {"x": "1", "y": "two"}
    assert json.loads(echo["body"]) == {"k": "v"}
    h = {k.lower(): v for k, v in echo["headers"].items()}
    assert h["x-custom"] == "yes"
    assert h["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"  # trusted loopback peer appends
    assert h["x-forwarded-proto"] == "http" and h["x-forwarded-host"].startswith("127.0.0.1:")
    assert h["x-toru-user"] == "admin"
    assert "authorization" not in h and "connection" not in h
    assert h["cookie"] == "theme=dark"  # Toru's session cookie never reaches a plugin


def test_binary_bodies_round_trip(srv):
    status, headers, data = _route(srv, "GET", "/hello/bytes")
    assert status == 200 and data == BINARY
    assert headers["content-type"] == "application/octet-stream"
    payload = BINARY[::-1] + b"\xff\xfe\x00"
    status, _, data = _route(
        srv,
        "POST",
        "/hello/bytes",
        payload,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert status == 200 and data == payload
    big = random.Random(7).randbytes(60000)  # just under this server's 64 KiB body limit
    status, _, data = _route(srv, "POST", "/hello/bytes", big)
    assert status == 200 and data == big


def test_raw_plugin_and_bundle(srv):
    status, _, data = _route(srv, "GET", "/raw/")
    assert status == 200, data
    status, headers, data = srv.request(
        "GET", "/api/plugins/hello-python/bundle.js", cookie=srv.user[0]
    )
    assert status == 200 and "javascript" in headers["content-type"]
    assert b"ToruPlugins" in data


def test_kv_through_api_reaches_plugin(srv):
    """The API's KV op and the plugin's own ctx.kv see the same namespace."""
    cookie, csrf = srv.user
    url = "/api/plugins/hello-python/kv"
    status, body = srv.json(
        "POST", url, {"action": "set", "key": "count", "value": "41"}, cookie=cookie, csrf=csrf
    )
    assert status == 200, body
    status, _, data = _route(srv, "POST", "/hello/counter/increment")
    assert status == 200 and json.loads(data) == {"count": 42}
    status, body = srv.json("POST", url, {"action": "get", "key": "count"}, token=srv.token)
    assert status == 200 and body["value"] == "42"


def test_logs_events_stats(srv):
    status, body = srv.json("GET", "/api/plugins/hello-python/logs?page_size=5", token=srv.token)
    assert status == 200 and "entries" in body
    status, body = srv.json("GET", "/api/plugins/hello-python/events?limit=5", token=srv.token)
    assert status == 200 and isinstance(body, list)
    status, body = srv.json("GET", "/api/plugins/hello-python/stats", token=srv.token)
    assert status == 200 and "latency" in body


# --------------------------------------------------------------------------- auth


USER_ENDPOINTS = [
    ("GET", "/api/auth/me"),
    ("POST", "/api/auth/logout"),
    ("POST", "/api/auth/password"),
    ("GET", "/api/system"),
    ("GET", "/api/plugins"),
    ("GET", "/api/plugins/hello-python"),
    ("GET", "/api/plugins/hello-python/bundle.js"),
    ("GET", "/api/plugins/hello-python/logs"),
    ("GET", "/api/plugins/hello-python/events"),
    ("GET", "/api/plugins/hello-python/stats"),
    ("POST", "/api/plugins/hello-python/kv"),
    ("GET", "/api/plugins/route/hello/echo"),
    ("POST", "/api/plugins/route/hello/echo"),
]
ADMIN_ENDPOINTS = [
    ("GET", "/api/auth/tokens"),
    ("POST", "/api/auth/tokens"),
    ("DELETE", "/api/auth/tokens/abc"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("DELETE", "/api/users/alice"),
    ("PATCH", "/api/users/alice"),
    ("POST", "/api/plugins/hello-python/enable"),
    ("POST", "/api/plugins/hello-python/disable"),
    ("POST", "/api/plugins/rescan"),
    ("POST", "/api/plugins/install"),
    ("POST", "/api/plugins/hello-python/approve"),
]


def test_unauthenticated_everywhere_401(srv):
    for method, path in USER_ENDPOINTS + ADMIN_ENDPOINTS:
        body = {} if method == "POST" else None
        status, _, data = srv.request(method, path, body)
        assert status == 401, (method, path, data)
        assert json.loads(data)["error"] == "unauthorized"
        status, _, _ = srv.request(method, path, body, token="toru_not-a-real-token")
        assert status == 401, (method, path)
    # /metrics through a proxy chain is not "a loopback client": needs auth too
    status, _, _ = srv.request("GET", "/metrics", headers={"X-Forwarded-For": "198.51.100.7"})
    assert status == 401


def test_wrong_role_403(srv):
    cookie, csrf = srv.user
    for method, path in ADMIN_ENDPOINTS:
        body = {} if method == "POST" else None
        status, _, data = srv.request(method, path, body, cookie=cookie, csrf=csrf)
        assert status == 403, (method, path, data)
        assert json.loads(data)["error"] == "admin_required"


def test_role_and_password_change_via_api(srv):
    admin_cookie, admin_csrf = srv.admin
    adm = {"cookie": admin_cookie, "csrf": admin_csrf}
    status, body = srv.json(
        "POST", "/api/users", {"username": "bob", "password": "bob-password-1"}, **adm
    )
    assert status == 201 and body["role"] == "user", body
    bob_cookie, _ = srv.login("bob", "bob-password-1")
    try:
        assert srv.request("GET", "/api/users", cookie=bob_cookie)[0] == 403
        status, body = srv.json("PATCH", "/api/users/bob", {"role": "admin"}, **adm)
        assert (status, body["role"]) == (200, "admin"), body
        for _ in range(8):  # at once, in every worker (4): the auth cache follows
            assert srv.request("GET", "/api/users", cookie=bob_cookie)[0] == 200
        status, body = srv.json("PATCH", "/api/users/bob", {"role": "user"}, **adm)
        assert (status, body["role"]) == (200, "user"), body
        for _ in range(8):
            assert srv.request("GET", "/api/users", cookie=bob_cookie)[0] == 403

        # bad input, unknown user, the last admin
        for bad in ({}, {"role": "root"}, {"role": 1}, {"password": "short"}):
            status, body = srv.json("PATCH", "/api/users/bob", bad, **adm)
            assert status == 400, (bad, body)
        assert srv.json("PATCH", "/api/users/nobody", {"role": "user"}, **adm)[0] == 404
        status, body = srv.json("PATCH", "/api/users/admin", {"role": "user"}, **adm)
        assert status == 409, body

        # a new password ends bob's sessions; the new one logs in
        status, body = srv.json("PATCH", "/api/users/bob", {"password": "bob-password-2"}, **adm)
        assert status == 200, body
        assert srv.request("GET", "/api/auth/me", cookie=bob_cookie)[0] == 401
        assert srv.login("bob", "bob-password-2")
    finally:
        assert srv.json("DELETE", "/api/users/bob", **adm)[0] == 200


def test_csrf_refused_without_token(srv):
    cookie, csrf = srv.user
    for method, path in [
        ("POST", "/api/auth/logout"),
        ("POST", "/api/plugins/hello-python/kv"),
        ("POST", "/api/plugins/route/hello/counter/increment"),
        ("DELETE", "/api/plugins/route/hello/echo"),
    ]:
        status, _, data = srv.request(method, path, {}, cookie=cookie)
        assert status == 403 and json.loads(data)["error"] == "csrf_failed", (path, data)
        status, _, _ = srv.request(method, path, {}, cookie=cookie, csrf=csrf[::-1])
        assert status == 403
    # still logged in: the refused logout did nothing
    assert srv.request("GET", "/api/auth/me", cookie=cookie)[0] == 200


def test_me_returns_csrf_and_logout(srv):
    cookie, csrf = srv.login("alice", USER_PW)
    status, body = srv.json("GET", "/api/auth/me", cookie=cookie)
    assert status == 200 and body == {
        "user": {"username": "alice", "role": "user"},
        "csrf_token": csrf,
    }
    status, headers, _ = srv.request("POST", "/api/auth/logout", {}, cookie=cookie, csrf=csrf)
    assert status == 200 and "toru_session=;" in headers["set-cookie"].replace('""', "")
    assert srv.request("GET", "/api/auth/me", cookie=cookie)[0] == 401


def test_session_expiry(srv):
    cookie, _ = srv.login("alice", USER_PW)
    assert srv.request("GET", "/api/auth/me", cookie=cookie)[0] == 200
    db = apsw.Connection(str(srv.home / "var" / "toru.db"))
    db.set_busy_timeout(5000)
    try:
        import hashlib

        token = cookie.split("=", 1)[1]
        db.execute(
            "UPDATE sessions SET expires_at=? WHERE token_hash=?",
            (time.time() - 1, hashlib.sha256(token.encode()).hexdigest()),
        )
    finally:
        db.close()
    status, _, data = srv.request("GET", "/api/auth/me", cookie=cookie)
    assert status == 401, data


def test_login_rate_limit_429(srv):
    spoof = {"X-Forwarded-For": "192.0.2.44"}  # its own client key; the peer is a trusted proxy
    for _ in range(5):
        status, _, _ = srv.request(
            "POST",
            "/api/auth/login",
            {"username": "mallory", "password": "wrong-password"},
            headers=spoof,
        )
        assert status == 401
    status, headers, data = srv.request(
        "POST", "/api/auth/login", {"username": "mallory", "password": "x"}, headers=spoof
    )
    assert status == 429 and json.loads(data)["error"] == "rate_limited"
    assert int(headers["retry-after"]) >= 1
    # another client is not affected
    assert srv.login("alice", USER_PW)


# --------------------------------------------------------------------------- 4xx inputs


def test_bad_input_400(srv):
    cookie, csrf = srv.admin
    for body in (b"{nope", b"[]", b'"str"', b""):
        status, _, data = srv.request(
            "POST", "/api/users", body, cookie=cookie, csrf=csrf,
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        assert status == 400, (body, data)
    status, body = srv.json(
        "POST", "/api/users", {"username": ["x"], "password": 5}, cookie=cookie, csrf=csrf
    )
    assert status == 400 and body["error"] in ("bad_field", "bad_username")
    status, body = srv.json("POST", "/api/plugins/hello-python/kv", {"action": 3}, token=srv.token)
    assert status == 400
    status, _, _ = srv.request(
        "GET", "/api/plugins/hello-python/logs?page_size=abc", token=srv.token
    )
    assert status == 400


@pytest.mark.parametrize(
    "path",
    [
        "/hello/../../api/users",
        "/hello/%2e%2e/x",
        "/hello/a%2fb",
        "/hello/a%5Cb",
        "/hello/%252e%252e/",
        "/%2e%2e/hello",
        "/..",
    ],
)
def test_traversal_400(srv, path):
    status, _, data = _route(srv, "GET", path)
    assert status == 400, (path, data)


def test_404s(srv):
    assert _route(srv, "GET", "/nope/x")[0] == 404  # unknown route
    assert _route(srv, "GET", "/system-info/")[0] == 404  # installed but disabled
    assert srv.request("GET", "/api/plugins/nope", token=srv.token)[0] == 404
    assert srv.request("GET", "/api/no/such/thing", token=srv.token)[0] == 404


def _chunked_post(srv, path: str, chunks: list[bytes]) -> tuple[int, bytes]:
    conn = srv.connection(30)
    try:
        conn.request(
            "POST",
            "/api/plugins/route" + path,
            body=iter(chunks),
            headers={"Authorization": f"Bearer {srv.token}"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_chunked_request_body_reaches_the_plugin_whole(srv):
    chunks = [b"first-", b"second-", b"x" * 30000, b"-last"]
    status, data = _chunked_post(srv, "/hello/echo", chunks)
    assert status == 200, data
    assert json.loads(data)["body"] == b"".join(chunks).decode()
    # beyond the body limit (64 KiB here) without a Content-Length: 413, nothing forwarded
    status, data = _chunked_post(srv, "/hello/echo", [b"y" * 40000, b"z" * 40000])
    assert status == 413 and json.loads(data)["error"] == "payload_too_large"
    assert _route(srv, "GET", "/hello/echo")[0] == 200


def test_413_body_limit(srv):
    status, _, data = _route(srv, "POST", "/hello/echo", b"x" * 70000)
    assert status == 413 and json.loads(data)["error"] == "payload_too_large"
    # the worker is fine afterwards
    assert _route(srv, "GET", "/hello/echo")[0] == 200


# --------------------------------------------------------------------------- plugin failures


def test_504_on_plugin_timeout_and_plugin_keeps_running(srv):
    pid = json.loads(_route(srv, "GET", "/webtest/pid")[2])["pid"]
    status, _, data = _route(srv, "GET", "/webtest/hang")
    assert status == 504 and json.loads(data)["error"] == "timeout"
    status, _, data = _route(srv, "GET", "/webtest/pid")
    assert status == 200 and json.loads(data)["pid"] == pid


def test_t15_crash_502_then_503_then_restart(srv):
    """T15 plus 502/503: a crash fails the in-flight request (502), requests during the
    backoff get 503 with Retry-After, and the plugin comes back with a new pid."""
    old = json.loads(_route(srv, "GET", "/webtest/pid")[2])["pid"]
    restarts = _info(srv, "web-test")["restarts"]
    status, _, data = _route(srv, "POST", "/webtest/crash", b"")
    assert status == 502, data
    seen_503 = None

    def during():
        nonlocal seen_503
        status, headers, _ = _route(srv, "GET", "/webtest/pid")
        if status == 503:
            seen_503 = headers
        return status in (200, 503)

    _poll(during, timeout=10, interval=0.05)
    assert seen_503 is not None, "no 503 during the restart backoff"
    assert int(seen_503["retry-after"]) >= 1
    assert _poll(lambda: _route(srv, "GET", "/webtest/pid")[0] == 200, timeout=20)
    new = json.loads(_route(srv, "GET", "/webtest/pid")[2])["pid"]
    assert new != old and not alive(old)
    assert _info(srv, "web-test")["restarts"] > restarts


def test_t12_t13_enable_disable_via_api(srv):
    cookie, csrf = srv.admin
    assert _route(srv, "GET", "/system-info/")[0] == 404
    status, body = srv.json("POST", "/api/plugins/system-info/enable", {}, cookie=cookie, csrf=csrf)
    assert status == 200 and body["enabled"] and body["state"] in ("starting", "running")
    assert _poll(lambda: _route(srv, "GET", "/system-info/")[0] == 200)
    pid = _info(srv, "system-info")["pid"]
    assert pid and alive(pid)
    status, body = srv.json(
        "POST", "/api/plugins/system-info/disable", {}, cookie=cookie, csrf=csrf
    )
    assert status == 200 and body["state"] == "stopped" and not body["enabled"]
    assert not alive(pid)
    assert _route(srv, "GET", "/system-info/")[0] == 404


def test_head_on_a_plugin_route_has_no_body_and_keeps_the_connection(srv):
    """HEAD through gunicorn (toru/wsgi/frontend.py sends plugin routes itself): the
    security headers and a Content-Length, no body bytes; a GET pipelined behind it on the
    same connection is read as its own, whole answer."""
    import re
    import socket

    host, port = srv.bind.rsplit(":", 1)
    head = (
        "HEAD /api/plugins/route/hello/echo HTTP/1.1\r\nHost: t\r\n"
        f"Authorization: Bearer {srv.token}\r\n\r\n"
    )
    get = head.replace("HEAD ", "GET ", 1)

    def complete(data: bytes) -> bool:
        parts = data.split(b"\r\n\r\n", 2)
        if len(parts) < 3:
            return False
        length = re.search(rb"(?i)content-length: *(\d+)", parts[1])
        return length is not None and len(parts[2]) >= int(length.group(1))

    data = b""
    with socket.create_connection((host, int(port)), timeout=timing.HTTP) as sock:
        sock.sendall((head + get).encode())
        while not complete(data):
            chunk = sock.recv(65536)
            assert chunk, data[:500]  # the server closed the connection
            data += chunk
    head_answer, get_answer, body = data.split(b"\r\n\r\n", 2)
    assert head_answer.startswith(b"HTTP/1.1 200"), data[:300]
    assert b"x-content-type-options: nosniff" in head_answer.lower()
    assert b"content-length: " in head_answer.lower()
    assert get_answer.startswith(b"HTTP/1.1 200"), data[:300]  # no body bytes after HEAD's
    assert json.loads(body)


def test_64_concurrent_clients_out_of_order(srv):
    """64 clients, each request answered after a random delay: every answer is its own."""
    errors: list[str] = []
    rng = random.Random(4)
    plan = [[(f"{c}-{i}", rng.randint(0, 120)) for i in range(3)] for c in range(64)]

    def client(reqs):
        for rid, ms in reqs:
            try:
                status, _, data = _route(srv, "GET", f"/webtest/slow?ms={ms}&id={rid}")
                got = json.loads(data).get("id") if status == 200 else None
                if status != 200 or got != rid:
                    errors.append(f"{rid}: {status} {data[:80]!r}")
            except Exception as exc:
                errors.append(f"{rid}: {exc!r}")

    threads = [threading.Thread(target=client, args=(p,)) for p in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:5]


def test_metrics_aggregate_workers_and_supervisor(srv):
    for _ in range(4):
        _route(srv, "GET", "/hello/echo")
    status, headers, data = srv.request("GET", "/metrics")  # direct loopback client
    assert status == 200 and headers["content-type"].startswith("text/plain")
    text = data.decode()
    assert 'toru_proxy_request_duration_seconds_bucket{code_class="2xx"' in text
    assert 'plugin="hello-python"' in text
    assert "toru_http_requests_total{" in text
    assert 'toru_plugin_up{plugin="hello-python"} 1.0' in text
    assert "toru_proxy_inflight" in text
    status, _, _ = srv.request(
        "GET", "/metrics", token=srv.token, headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert status == 200


# --------------------------------------------------------------------------- issue 15's gaps


def _samples(srv) -> dict[tuple, float]:
    """Every sample of ``/metrics`` (all processes merged) by ``(name, sorted labels)``."""
    from prometheus_client.parser import text_string_to_metric_families

    status, _, data = srv.request("GET", "/metrics")
    assert status == 200, data[:200]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(data.decode())
        for s in family.samples
    }


def test_metrics_count_every_request_once_whichever_worker_scrapes(srv):
    """The workers batch their metric updates per loop tick (toru/wsgi/metrics.py
    ``PendingWrites``); a scrape, served by any of the 4 workers, still counts every request
    once, under the labels it always had: forwarded ones by plugin and status class (GET
    and HEAD), refused ones (401, 403 CSRF) in toru_http_* by route template."""
    tmpl = "/api/plugins/route/{route}/{rest:path}"
    want = {
        ("toru_proxy_request_duration_seconds_count", (("code_class", "2xx"), ("plugin", "hello-python"))): 14,
        ("toru_proxy_request_duration_seconds_bucket", (("code_class", "2xx"), ("le", "+Inf"), ("plugin", "hello-python"))): 14,
        ("toru_http_requests_total", (("method", "GET"), ("route", tmpl), ("status", "401"))): 5,
        ("toru_http_requests_total", (("method", "POST"), ("route", tmpl), ("status", "403"))): 2,
        ("toru_http_request_duration_seconds_count", (("method", "POST"), ("route", tmpl))): 2,
    }  # fmt: skip
    before = _samples(srv)
    for _ in range(12):
        assert _route(srv, "GET", "/hello/echo")[0] == 200
    for _ in range(2):
        assert _route(srv, "HEAD", "/hello/echo")[0] == 200
    for _ in range(5):
        assert _route(srv, "GET", "/hello/echo", token=None)[0] == 401
    for _ in range(2):  # a session without its CSRF token
        assert _route(srv, "POST", "/hello/echo", b"x", token=None, cookie=srv.user[0])[0] == 403

    def deltas() -> dict[tuple, float]:
        now = _samples(srv)
        return {k: now.get(k, 0.0) - before.get(k, 0.0) for k in want}

    # NOTE: another worker writes its last updates in the loop iteration after its answer;
    # on a loaded machine that may come a moment after this scrape, never later than that.
    got = _poll(lambda: (d := deltas()) == want and d, timeout=timing.WAIT) or deltas()
    assert got == want
    inflight = ("toru_proxy_inflight", (("plugin", "hello-python"),))
    assert _samples(srv).get(inflight) == 0.0


def test_rescan_registers_a_new_binary_and_forgets_a_removed_one(srv):
    cookie, csrf = srv.admin
    binary = srv.home / "plugins" / "rescan-me.binary"
    binary.write_text("#!/bin/sh\necho 'not metadata'\n")
    binary.chmod(0o755)
    try:
        status, body = srv.json("POST", "/api/plugins/rescan", {}, cookie=cookie, csrf=csrf)
        assert status == 200, body
        assert set(body) == {"added", "removed", "total"}, body
        # listed as soon as the reply is there (the periodic check may have added it first)
        listed = {p["id"]: p for p in srv.json("GET", "/api/plugins", token=srv.token)[1]}
        assert "rescan-me" in listed and body["total"] == len(listed), (body, listed)
        assert listed["rescan-me"]["state"] in ("invalid", "discovering"), listed["rescan-me"]
        # a session needs the CSRF token here like on every other POST
        status, _, data = srv.request("POST", "/api/plugins/rescan", {}, cookie=cookie)
        assert status == 403 and json.loads(data)["error"] == "csrf_failed"
    finally:
        binary.unlink()
    status, body = srv.json("POST", "/api/plugins/rescan", {}, token=srv.token)
    assert status == 200, body
    listed = {p["id"] for p in srv.json("GET", "/api/plugins", token=srv.token)[1]}
    assert "rescan-me" not in listed and body["total"] == len(listed), (body, listed)


def test_system_reports_version_uptime_and_store(srv):
    from toru import __version__

    cookie, _ = srv.user  # any signed-in user
    status, body = srv.json("GET", "/api/system", cookie=cookie)
    assert status == 200, body
    assert body["version"] == __version__
    assert body["store"] == {"ok": True}
    sup = body["supervisor"]
    assert isinstance(sup["pid"], int) and sup["pid"] > 0
    assert (
        0 <= sup["uptime_s"] < 3600 and abs(time.time() - sup["uptime_s"] - sup["started_at"]) < 60
    )


def test_own_password_change_keeps_this_session_and_ends_the_others(srv):
    adm = {"cookie": srv.admin[0], "csrf": srv.admin[1]}
    old, new = "carol-password-1", "carol-password-2"
    status, body = srv.json("POST", "/api/users", {"username": "carol", "password": old}, **adm)
    assert status == 201, body
    try:
        here, here_csrf = srv.login("carol", old)
        elsewhere, _ = srv.login("carol", old)
        me = {"cookie": here, "csrf": here_csrf}
        url = "/api/auth/password"
        for bad in (
            {},
            {"current_password": old},
            {"current_password": old, "new_password": "short"},
        ):
            status, body = srv.json("POST", url, bad, **me)
            assert status == 400, (bad, body)
        status, body = srv.json(
            "POST", url, {"current_password": "wrong-password", "new_password": new}, **me
        )
        assert (status, body["error"]) == (401, "bad_credentials"), body
        assert srv.request("GET", "/api/auth/me", cookie=here)[0] == 200  # still signed in
        status, headers, data = srv.request(
            "POST", url, {"current_password": old, "new_password": new}, **me
        )
        assert status == 200, data
        body = json.loads(data)
        assert body["user"]["username"] == "carol" and body["csrf_token"] not in (None, here_csrf)
        reissued = headers["set-cookie"].split(";", 1)[0]
        assert reissued.startswith("toru_session=") and reissued != here
        for ended in (here, elsewhere):
            assert srv.request("GET", "/api/auth/me", cookie=ended)[0] == 401
        status, body = srv.json("GET", "/api/auth/me", cookie=reissued)
        assert status == 200 and body["csrf_token"] == json.loads(data)["csrf_token"], body
        with pytest.raises(RuntimeError):
            srv.login("carol", old)
        assert srv.login("carol", new)
    finally:
        assert srv.json("DELETE", "/api/users/carol", **adm)[0] == 200
