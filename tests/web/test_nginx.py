"""Real Debian nginx, configured from the shipped deploy/nginx/toru.conf, in front of
``toru serve`` bound to a Unix socket: login, a plugin route and /metrics through it, the
static UI from webapp/, and the client's address reaching the plugin in X-Forwarded-For.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.servers import ROOT, ToruServer, free_port

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not installed"),
]

DEPLOY = ROOT / "deploy" / "nginx"


def nginx_conf(prefix: Path, port: int, sock: str) -> Path:
    """The shipped site with test paths, wrapped in a minimal nginx.conf using temp dirs."""
    site = (DEPLOY / "toru.conf").read_text()
    site = site.replace("unix:/run/toru/web.sock", f"unix:{sock}")
    site = site.replace("/opt/toru/webapp", str(ROOT / "webapp"))
    site = site.replace("listen 80;", f"listen 127.0.0.1:{port};")
    site = site.replace("listen [::]:80;", "")
    site = site.replace("/etc/nginx/toru_proxy_params", str(DEPLOY / "toru_proxy_params"))
    for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / "tmp" / d).mkdir(parents=True, exist_ok=True)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"""
daemon off;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    {site}
}}
"""
    )
    return conf


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


def test_through_nginx(short_home, example_plugins):
    sock = str(short_home / "web.sock")
    server = ToruServer(
        short_home,
        plugins=[example_plugins["hello-python"]],
        enable=["hello-python"],
        bind=f"unix:{sock}",
        env={"TORU_SHUTDOWN_GRACE": "2"},
    )
    prefix = short_home / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = nginx_conf(prefix, port, sock)
    check = subprocess.run(["nginx", "-t", "-p", str(prefix), "-c", str(conf)], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    server.start()
    nginx = subprocess.Popen(
        ["nginx", "-p", str(prefix), "-c", str(conf)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert nginx.poll() is None, (prefix / "error.log").read_text()
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

        assert req(port, "GET", "/healthz")[0] == 200
        # the UI comes from nginx's disk, with the SPA fallback
        status, headers, body = req(port, "GET", "/")
        assert status == 200 and b"<html" in body.lower() and "nginx" in headers["server"]
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
        # nginx appended the real client (127.0.0.1) to the chain; the Unix peer adds nothing
        assert h["x-forwarded-for"] == "198.51.100.23, 127.0.0.1"
        assert h["x-forwarded-proto"] == "http"
        assert h["x-forwarded-host"] == "127.0.0.1"
        assert echo["query"] == {"q": "1"}

        status, _, _ = req(
            port, "GET", "/api/plugins/route/hello/%2e%2e/x", headers={"Cookie": cookie}
        )
        assert status in (400, 404)  # nginx may normalise it away; never reaches a plugin

        # /metrics: nginx lets 127.0.0.1 through, Toru still wants credentials via a proxy
        assert req(port, "GET", "/metrics")[0] == 401
        status, headers, body = req(port, "GET", "/metrics", headers={"Cookie": cookie})
        assert status == 200 and b"toru_proxy_request_duration_seconds" in body
        # the CSRF rule holds through the proxy too
        status, _, _ = req(port, "POST", "/api/auth/logout", {}, headers={"Cookie": cookie})
        assert status == 403
    finally:
        if nginx.poll() is None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(nginx.pid, signal.SIGKILL)
                nginx.wait(5)
        server.stop()
