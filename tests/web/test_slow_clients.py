"""Slow clients cost a socket, not a worker (real ``toru serve``, gunicorn's asgi worker).

One worker holds 64 connections that never finish their headers (slowloris), two whose body
stops short of its Content-Length, and two failed logins (scrypt) in flight; ``/healthz``
still answers at once, and the slow connections are closed after ``client_timeout``.
"""

from __future__ import annotations

import socket
import threading
import time

from tests import timing
from tests.servers import ToruServer

CLIENT_TIMEOUT = timing.scaled(1.0)  # short product deadline: the slow clients never finish


def _open(server: ToruServer, data: bytes) -> socket.socket:
    host, port = server.bind.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timing.WAIT)
    sock.sendall(data)
    return sock


def _closed_after(sock: socket.socket, limit: float) -> tuple[bool, bytes]:
    """Read until the server closes ``sock`` (True) or ``limit`` seconds pass (False)."""
    sock.settimeout(0.2)
    got = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            return True, got
        if not chunk:
            return True, got
        got += chunk
    return False, got


def test_slowloris_and_short_bodies_do_not_starve_healthz(short_home):
    s = ToruServer(short_home, workers=1, env={"TORU_CLIENT_TIMEOUT": str(CLIENT_TIMEOUT)})
    s.start(timeout=timing.WAIT)
    socks: list[socket.socket] = []
    try:
        opened = time.monotonic()
        headers = [_open(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ") for _ in range(64)]
        short_body = b"POST /api/auth/login HTTP/1.1\r\nHost: x\r\n"
        short_body += b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        bodies = [_open(s, short_body) for _ in range(2)]
        socks = headers + bodies

        logins: list[int] = []

        def failed_login() -> None:
            status, _ = s.json("POST", "/api/auth/login", {"username": "admin", "password": "x"})
            logins.append(status)

        threads = [threading.Thread(target=failed_login) for _ in range(2)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        status, _, _ = s.request("GET", "/healthz", timeout=timing.WAIT)
        took = time.monotonic() - t0
        assert status == 200
        assert took < timing.scaled(5.0), f"/healthz took {took:.2f} s beside the slow clients"
        for t in threads:
            t.join(timing.WAIT)
        assert logins == [401, 401]

        limit = CLIENT_TIMEOUT + timing.scaled(10.0)
        for sock in headers:
            closed, _ = _closed_after(sock, limit)
            assert closed, "a connection that never finished its headers is still open"
        for sock in bodies:
            closed, answer = _closed_after(sock, limit)
            assert closed, "a connection whose body stopped short is still open"
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert time.monotonic() - opened >= CLIENT_TIMEOUT * 0.9  # closed by the deadline
        assert s.request("GET", "/healthz", timeout=timing.WAIT)[0] == 200
    finally:
        for sock in socks:
            sock.close()
        s.stop()
