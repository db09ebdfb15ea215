"""Response headers through a real ``toru serve`` with real plugins (issue 13).

- A plugin's ``Set-Cookie`` naming Toru's session cookie (any case, ``__Host-``/``__Secure-``
  forms, a nameless ``=toru_session=...``) never reaches the browser; the plugin's other
  cookies do; the plugin's log says so.
- Plugin answers carry ``X-Content-Type-Options: nosniff`` whatever the plugin said.
- Toru's own answers (UI files, API JSON, errors, /healthz) carry the CSP and ``nosniff``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import timing
from tests.servers import ToruServer
from tests.web.procs import poll
from tests.web.webtest_plugin import install
from toru.session_cookie import names_toru_cookie, sets_toru_cookie
from toru.wsgi.headers import CSP

TORU_COOKIES = [
    "toru_session=planted; Path=/",
    "TORU_SESSION=planted; Path=/",
    "__Host-toru_session=planted; Path=/; Secure",
    "__secure-Toru_Session=planted; Path=/; Secure",
    "=toru_session=planted; Path=/",
    "  toru_session = planted",
    "toru_session=; Max-Age=0; Path=/",  # a forced logout
]
KEPT = ["theme=dark; Path=/", "toru_session_hint=1; Path=/"]


@pytest.fixture(scope="module")
def srv(tmp_path_factory, example_plugins):
    home = Path(tmp_path_factory.mktemp("h", numbered=True))
    install(home / "plugins")
    server = ToruServer(
        home,
        plugins=[example_plugins["hello-python"]],
        enable=["web-test", "hello-python"],
    )
    server.start()
    try:
        server.auth = server.login()
        assert poll(
            lambda: (
                server.request("GET", "/api/plugins/route/webtest/pid", cookie=server.auth[0])[0]
                == 200
            )
        )
        yield server
    finally:
        server.stop()


def _reply(srv: ToruServer, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]]]:
    """Ask web-test to answer with ``headers``; the raw response header list."""
    cookie, csrf = srv.auth
    conn = srv.connection()
    try:
        body = json.dumps({"headers": headers})
        conn.request(
            "POST",
            "/api/plugins/route/webtest/reply",
            body=body,
            headers={"Cookie": cookie, "X-CSRF-Token": csrf, "Content-Type": "application/json"},
        )
        resp = conn.getresponse()
        resp.read()
        return resp.status, [(k.lower(), v) for k, v in resp.getheaders()]
    finally:
        conn.close()


def test_plugin_cannot_set_or_clear_toru_session(srv):
    # one reply, every Set-Cookie a distinct header name (JSON keys differ only in case)
    headers = {}
    for i, value in enumerate(TORU_COOKIES + KEPT):
        name = "".join(c.upper() if (i >> j) & 1 else c for j, c in enumerate("setcookie"))
        headers[name[:3] + "-" + name[3:]] = value
    assert len(headers) == len(TORU_COOKIES + KEPT)
    status, got = _reply(srv, headers)
    assert status == 200
    assert sorted(v for k, v in got if k == "set-cookie") == sorted(KEPT)
    # the user's session is untouched
    assert srv.request("GET", "/api/auth/me", cookie=srv.auth[0])[0] == 200

    log = srv.home / "var" / "log" / "plugins" / "web-test.log"

    def warned():
        lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
        return [e for e in lines if e.get("level") == "warn" and "toru_session" in e["message"]]

    entries = poll(warned, timeout=timing.WAIT)
    assert entries, "no warning in the plugin's log"
    assert "removed it" in entries[0]["message"] and entries[0]["source"] == "supervisor"


def test_plugin_answers_get_nosniff_and_keep_their_own_policy(srv):
    status, got = _reply(
        srv,
        {
            "Content-Type": "text/html; charset=utf-8",
            "X-Content-Type-Options": "sniff-please",
            "Content-Security-Policy": "default-src 'none'",
        },
    )
    h = dict(got)
    assert status == 200
    assert h["x-content-type-options"] == "nosniff"
    assert h["content-security-policy"] == "default-src 'none'"  # the plugin's own choice


@pytest.mark.parametrize(
    "path,auth",
    [
        ("/", False),
        ("/plugins/web-test", False),  # the SPA fallback
        ("/js/main.js", False),
        ("/healthz", False),
        ("/api/auth/me", False),  # a 401 error answer too
        ("/api/plugins", True),
        ("/api/plugins/hello-python/bundle.js", True),
    ],
)
def test_toru_answers_carry_csp_and_nosniff(srv, path, auth):
    status, h, _ = srv.request("GET", path, cookie=srv.auth[0] if auth else None)
    assert status in (200, 401), (path, status)
    assert h.get("content-security-policy") == CSP, (path, h)
    assert h["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CSP.split("script-src", 1)[1].split(";", 1)[0]


@pytest.mark.parametrize("value", TORU_COOKIES)
def test_the_rule_refuses_every_form_of_toru_cookie(value):
    assert names_toru_cookie(value)
    assert sets_toru_cookie({"Content-Type": "text/plain", "SET-COOKIE": value})


@pytest.mark.parametrize("value", [*KEPT, "session=1", "xtoru_session=1", "=theme=dark", ""])
def test_the_rule_keeps_other_cookies(value):
    assert not names_toru_cookie(value)
    assert not sets_toru_cookie({"Set-Cookie": value, "X-Toru-Session": "toru_session=1"})
