"""Trusted proxies by default (issue 13): a real ``toru serve`` on TCP with
``http.trusted_proxies`` unset believes no client's forwarding headers, loopback included.

- A local client rotating ``X-Forwarded-For`` is still one client for the per-IP login limit.
- ``X-Forwarded-Proto``/``-For``/``-Host``, ``Forwarded`` and ``X-Real-IP`` sent by the
  client never reach a plugin (hello-python echoes its headers); Toru's own values do, and
  a claimed ``https`` does not make the session cookie ``Secure``.

Behind the shipped nginx on a Unix socket the client's address still comes through:
tests/web/test_nginx.py.
"""

from __future__ import annotations

import json

import pytest

from tests.servers import ToruServer
from tests.web.procs import poll
from toru.config import load_config

LOGIN_RATE = 3


@pytest.fixture(scope="module")
def srv(tmp_path_factory, example_plugins):
    server = ToruServer(
        tmp_path_factory.mktemp("home"),
        plugins=[example_plugins["hello-python"]],
        enable=["hello-python"],
        env={"TORU_LOGIN_RATE": str(LOGIN_RATE)},
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


SPOOF = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "evil.example",
    "Forwarded": "for=203.0.113.7;proto=https;host=evil.example",
    "X-Real-IP": "203.0.113.7",
}


def test_client_forwarding_headers_do_not_reach_plugins(srv):
    status, headers, body = srv.request(
        "POST",
        "/api/auth/login",
        {"username": "admin", "password": srv.admin_password},
        headers=SPOOF,
    )
    assert status == 200, body
    assert "Secure" not in headers["set-cookie"]  # plain http, whatever the client claims
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert poll(
        lambda: srv.request("GET", "/api/plugins/route/hello/echo", cookie=cookie)[0] == 200
    )
    status, _, body = srv.request(
        "GET", "/api/plugins/route/hello/echo/x", cookie=cookie, headers=SPOOF
    )
    assert status == 200, body
    h = {k.lower(): v for k, v in json.loads(body)["headers"].items()}
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == srv.bind
    assert "forwarded" not in h and "x-real-ip" not in h
    # an operator whose proxy is not named learns it from the log, with the setting to change
    want = "ignoring X-Forwarded-For from 127.0.0.1: it is not in http.trusted_proxies"
    assert poll(lambda: want in srv.output()), srv.output()[-2000:]


def test_rotating_x_forwarded_for_does_not_dodge_the_login_limit(srv):
    # a different user each time, so only the per-address limit can refuse
    statuses = []
    for i in range(LOGIN_RATE + 2):
        status, _, _ = srv.request(
            "POST",
            "/api/auth/login",
            {"username": f"nobody{i}", "password": "wrong-password"},
            headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
        )
        statuses.append(status)
    assert statuses[:LOGIN_RATE] == [401] * LOGIN_RATE
    assert statuses[LOGIN_RATE:] == [429, 429], statuses


def test_default_trust_follows_the_bind(tmp_path):
    """The rule in one place (toru/config.py): a unix: bind trusts its peer, TCP nobody,
    an explicit list (or 'none') wins."""
    assert load_config(tmp_path, env={}).trusted_proxies == ()
    unix = {"TORU_BIND": "unix:/run/toru/web.sock"}
    assert load_config(tmp_path, env=unix).trusted_proxies == ("unix",)
    assert load_config(tmp_path, env={**unix, "TORU_TRUSTED_PROXIES": "none"}).trusted_proxies == ()
    named = load_config(tmp_path, env={"TORU_TRUSTED_PROXIES": "10.0.0.2, ::1"})
    assert named.trusted_proxies == ("10.0.0.2", "::1")
    # what toru serve hands gunicorn and the supervisor keeps an explicit 'nobody'
    child = load_config(
        tmp_path, env=load_config(tmp_path, env={**unix, "TORU_TRUSTED_PROXIES": "none"}).to_env()
    )
    assert child.trusted_proxies == ()
    with pytest.raises(ValueError, match="not an IP address"):
        load_config(tmp_path, env={"TORU_TRUSTED_PROXIES": "localhost"})
