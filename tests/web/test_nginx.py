"""Real Debian nginx, configured from the shipped deploy/nginx/toru.conf, in front of
``toru serve`` bound to a Unix socket: login, a plugin route and /metrics through it, the
static UI from webapp/, and the client's address reaching the plugin in X-Forwarded-For.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import apsw
import pytest

from tests import timing
from tests.servers import ToruServer, free_port, shipped_nginx_conf
from toru.doctor import GUNICORN_CONF, literal_settings
from toru.wsgi.headers import CSP

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]


def req(port, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        h = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        conn.close()


class Nginx:
    """Debian's nginx with the shipped site in front of a ``toru serve`` on a Unix socket."""

    def __init__(self, prefix: Path, sock: str, keepalive_timeout: str | None = None) -> None:
        prefix.mkdir()
        self.prefix = prefix
        self.port = free_port()
        self.conf = shipped_nginx_conf(prefix, self.port, sock, keepalive_timeout)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Nginx:
        check = subprocess.run(
            ["nginx", "-t", "-p", str(self.prefix), "-c", str(self.conf)], capture_output=True
        )
        assert check.returncode == 0, check.stderr.decode()
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(self.prefix), "-c", str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timing.WAIT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, (self.prefix / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        nginx = self.proc
        if nginx is not None and nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(timing.scaled(10))
            except subprocess.TimeoutExpired:
                os.killpg(nginx.pid, signal.SIGKILL)
                nginx.wait(5)


@pytest.fixture
def proxied(request, short_home, example_plugins):
    """``(nginx port, server, socket path)``: nginx -> Unix socket -> ``toru serve``."""
    keepalive = getattr(request, "param", None) or {}
    sock = str(short_home / "web.sock")
    env = {"TORU_SHUTDOWN_GRACE": "2"}
    if keepalive.get("gunicorn"):
        env["GUNICORN_CMD_ARGS"] = f"--keep-alive {keepalive['gunicorn']}"
    server = ToruServer(
        short_home,
        plugins=[example_plugins["hello-python"]],
        enable=["hello-python"],
        bind=f"unix:{sock}",
        env=env,
    )
    nginx = Nginx(short_home / "nginx", sock, keepalive.get("nginx"))
    server.start()
    try:
        nginx.start()
        yield nginx.port, server, sock
    finally:
        nginx.stop()
        server.stop()


def test_through_nginx(proxied):
    port, _, _ = proxied
    assert req(port, "GET", "/healthz")[0] == 200
    # the UI comes from nginx's disk, with the SPA fallback and Toru's own headers
    status, headers, body = req(port, "GET", "/")
    assert status == 200 and b"<html" in body.lower() and "nginx" in headers["server"]
    assert headers["content-security-policy"] == CSP
    assert headers["x-content-type-options"] == "nosniff"
    assert req(port, "GET", "/api/auth/me")[1]["content-security-policy"] == CSP
    assert req(port, "GET", "/plugins/hello-python")[2] == body

    status, headers, body = req(
        port, "POST", "/api/auth/login", {"username": "admin", "password": "admin-pass-123"}
    )
    assert status == 200, body
    cookie = headers["set-cookie"].split(";", 1)[0]
    assert "Secure" not in headers["set-cookie"]  # plain http through the proxy

    status, _, body = req(
        port,
        "GET",
        "/api/plugins/route/hello/echo/x?q=1",
        headers={"Cookie": cookie, "X-Forwarded-For": "198.51.100.23"},
    )
    assert status == 200, body
    echo = json.loads(body)
    h = {k.lower(): v for k, v in echo["headers"].items()}
    # nginx replaced the client's chain with the address it saw; the Unix peer adds nothing
    assert h["x-forwarded-for"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "127.0.0.1"
    assert echo["query"] == {"q": "1"}

    status, _, _ = req(port, "GET", "/api/plugins/route/hello/%2e%2e/x", headers={"Cookie": cookie})
    assert status in (400, 404)  # nginx may normalise it away; never reaches a plugin

    # /metrics: nginx lets 127.0.0.1 through, Toru still wants credentials via a proxy
    assert req(port, "GET", "/metrics")[0] == 401
    status, headers, body = req(port, "GET", "/metrics", headers={"Cookie": cookie})
    assert status == 200 and b"toru_proxy_request_duration_seconds" in body
    # the CSRF rule holds through the proxy too
    status, _, _ = req(port, "POST", "/api/auth/logout", {}, headers={"Cookie": cookie})
    assert status == 403


def upstream_connections(sock: str) -> set[int]:
    """Inodes of the connected sockets gunicorn accepted on ``sock``: an accepted Unix socket
    carries its listener's path in /proc/net/unix (state 03 = connected)."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == sock and fields[5] == "03":
                inodes.add(int(fields[6]))
    return inodes


# Keep the shipped ratio (nginx drops idle upstream connections before gunicorn does), with
# timeouts long enough that a slow machine cannot make them expire between two requests.
KEEPALIVE = {"nginx": f"{int(timing.scaled(20))}s", "gunicorn": str(int(timing.scaled(40)))}


@pytest.mark.parametrize("proxied", [KEEPALIVE], indirect=True)
def test_client_address_through_nginx(proxied):
    """Toru on a Unix socket believes nginx (its default for a unix: bind), and nginx sets
    the address it saw: the login limit counts the real client, whatever it claims."""
    port, server, _ = proxied
    for i in range(3):
        status, _, _ = req(
            port,
            "POST",
            "/api/auth/login",
            {"username": f"nobody{i}", "password": "wrong"},
            headers={"X-Forwarded-For": f"198.51.100.{i}", "X-Real-IP": "198.51.100.9"},
        )
        assert status == 401
    db = apsw.Connection(str(server.home / "var" / "toru.db"), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        keys = {k for (k,) in db.execute("SELECT key FROM login_failures")}
    finally:
        db.close()
    assert {k for k in keys if k.startswith("client:")} == {"client:127.0.0.1"}, keys


def test_upstream_connections_are_kept_alive_and_reused(proxied):
    """20 requests, each on a new client connection, reach gunicorn over one or two
    upstream connections that nginx keeps open between them. Without keepalive each request
    opens and closes its own, and none is left open after its answer: that is also what
    gunicorn's ``sync`` worker does whatever nginx asks (it closes every connection), which
    the test checks instead when Toru is configured with it."""
    port, _, sock = proxied
    seen: list[set[int]] = []
    for _ in range(20):
        assert req(port, "GET", "/healthz")[0] == 200
        seen.append(upstream_connections(sock))
    if literal_settings(GUNICORN_CONF).get("worker_class", "sync") == "sync":
        # a connection is seen at most while its answer is being closed, never for long
        uses = collections.Counter(inode for snapshot in seen for inode in snapshot)
        assert max(uses.values(), default=0) <= 3, seen
        return
    everything = set().union(*seen)
    # an idle connection stays open after every answer, and they are the same few throughout
    assert all(seen), seen
    assert 1 <= len(everything) <= 2, seen
