"""Large binary bodies through ``toru serve`` (issue 12): 1 MiB and 5 MiB of non-UTF-8 bytes
round-trip byte-exact, as requests and as answers, to an SDK plugin (``binary_bodies``: raw
bytes in binary frames) and to an original-protocol plugin (JSON strings, base64); over the
limit is 413 and nothing hangs; a binary frame whose JSON length disagrees with the frame is
a protocol error: 502, the plugin's log and events say so, and the plugin is served again.
"""

from __future__ import annotations

import http.client
import re
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests import timing
from tests.servers import ToruServer
from tests.web.bodies_plugins import install, pattern
from tests.web.procs import poll
from toru_plugin_api.aio import SEND_BUFFER

MIB = 1024 * 1024
LIMIT = 6 * MIB
SIZES = [MIB, 5 * MIB]


@pytest.fixture(scope="module")
def srv():
    home = Path(tempfile.mkdtemp(prefix="toru-b-", dir="/tmp"))
    install(home / "plugins")
    s = ToruServer(
        home,
        enable=["bodies-sdk", "bodies-v1", "bodies-liar"],
        env={
            "TORU_BODY_LIMIT": str(LIMIT),
            "TORU_RESTART_BACKOFF": "0.5",
        },
    )
    s.start()
    try:
        cookie, csrf = s.login()
        status, body = s.json("POST", "/api/auth/tokens", {"name": "b"}, cookie=cookie, csrf=csrf)
        assert status == 201, body
        s.token = body["token"]
        for route in ("bsdk/bytes/1", "bv1/bytes?n=1", "bliar/ok"):
            assert poll(lambda r=route: _call(s, "GET", r)[0] == 200, timing.WAIT), route
        yield s
    finally:
        s.stop()


def _call(s: ToruServer, method: str, route: str, body: bytes | None = None):
    headers = {"Content-Type": "application/octet-stream"} if body is not None else None
    try:
        return s.request(
            method,
            f"/api/plugins/route/{route}",
            body,
            token=s.token,
            headers=headers,
            timeout=timing.HTTP,
        )
    except OSError as exc:
        return None, {}, repr(exc).encode()


@pytest.mark.parametrize("size", SIZES, ids=["1MiB", "5MiB"])
def test_binary_request_bodies_round_trip_byte_exact(srv, size):
    data = pattern(size)
    status, headers, body = _call(srv, "POST", "bsdk/echo", data)
    assert status == 200, body[:200]
    assert body == data
    assert headers.get("x-binary-frame") == "1"  # raw bytes, not a JSON string
    status, _, body = _call(srv, "POST", "bv1/echo", data)
    assert status == 200, body[:200]
    assert body == data  # the original plugin got (and echoed) the base64 JSON string


@pytest.mark.parametrize("size", SIZES, ids=["1MiB", "5MiB"])
def test_binary_answers_round_trip_byte_exact(srv, size):
    status, headers, body = _call(srv, "GET", f"bsdk/bytes/{size}")
    assert status == 200, body[:200]
    assert body == pattern(size)
    assert headers["content-length"] == str(size)
    assert headers.get("x-binary-frame") == "1"  # raw bytes, not base64 in JSON
    status, _, body = _call(srv, "GET", f"bv1/bytes?n={size}")
    assert status == 200, body[:200]
    assert body == pattern(size)


def _post_raw(s: ToruServer, route: str, body: bytes, chunked: bool) -> bytes:
    """POST ``body`` on a raw socket while reading: the server may answer (and close) before
    the body is all sent, as it should for 413; returns the status line."""
    host, port = s.bind.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=timing.HTTP)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {len(body)}"
    head = (
        f"POST /api/plugins/route/{route} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {s.token}\r\n{framing}\r\n\r\n"
    ).encode()

    def send() -> None:
        try:
            sock.sendall(head)
            for i in range(0, len(body), 256 * 1024):
                part = body[i : i + 256 * 1024]
                sock.sendall(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part)
            if chunked:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # answered and closed early: what we are testing

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        return sock.makefile("rb").readline()
    finally:
        sock.close()
        sender.join(timing.HTTP)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_and_nothing_hangs(srv, chunked):
    for route in ("bsdk/echo", "bv1/echo"):
        status_line = _post_raw(srv, route, pattern(LIMIT + 1), chunked)
        assert status_line.split()[1:2] == [b"413"], status_line
    status, _, body = _call(srv, "POST", "bsdk/echo", b"after")
    assert (status, body) == (200, b"after")
    status, _, body = _call(srv, "POST", "bv1/echo", b"after")
    assert (status, body) == (200, b"after")


def test_a_binary_frame_that_lies_about_its_json_length_is_a_protocol_error(srv):
    status, _, body = _call(srv, "GET", "bliar/liar")
    assert status == 502, body[:200]
    assert b"protocol error" in body, body[:300]

    def logged() -> bool:
        st, lines = srv.json("GET", "/api/plugins/bodies-liar/logs?page_size=50", token=srv.token)
        return st == 200 and "binary frame declares" in str(lines)

    def evented() -> bool:
        st, events = srv.json("GET", "/api/plugins/bodies-liar/events?limit=20", token=srv.token)
        return st == 200 and "binary frame declares" in str(events)

    assert poll(logged, timing.WAIT), "the protocol error is not in the plugin's log"
    assert poll(evented, timing.WAIT), "the protocol error is not in the plugin's events"
    # the connection recovers: the plugin is served again (restarted after the bad frame)
    ok = poll(lambda: _call(srv, "POST", "bliar/ok", b"\xff\x00")[2] == b"ok:\xff\x00", timing.WAIT)
    assert ok, "the plugin was not served again after the bad frame"


def test_large_bodies_on_one_keep_alive_connection(srv):
    """Several 1 MiB bodies one after another on one client connection: each is answered
    (gunicorn_h1c's parser dropped such a connection without an answer every few requests)."""
    host, port = srv.bind.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timing.HTTP)
    data = pattern(MIB)
    headers = {"Authorization": f"Bearer {srv.token}", "Content-Type": "application/octet-stream"}
    try:
        for i in range(8):
            conn.request("POST", "/api/plugins/route/bsdk/echo", data, headers)
            resp = conn.getresponse()
            assert (i, resp.status, resp.read() == data) == (i, 200, True)
    finally:
        conn.close()


# ``ss -xm``: local address, its inode, the peer's inode, and the send buffer (``tb``).
_SS_LINE = re.compile(r"^u_str\s+\S+\s+\d+\s+\d+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)\s.*\btb(\d+)")


def _unix_send_buffers() -> tuple[dict[str, int], dict[str, str], dict[str, list[str]]]:
    """Every connected Unix stream socket of the machine: its send buffer, its peer, and
    the inodes of the connections accepted on each listening path."""
    out = subprocess.run(["ss", "-xmH"], capture_output=True, text=True, check=True).stdout
    tb: dict[str, int] = {}
    peer: dict[str, str] = {}
    at: dict[str, list[str]] = {}
    for line in out.splitlines():
        m = _SS_LINE.match(line)
        if m:
            path, inode, peer_inode, size = m.groups()
            tb[inode], peer[inode] = int(size), peer_inode
            at.setdefault(path, []).append(inode)
    return tb, peer, at


def test_framed_connections_have_room_for_a_big_frame(srv):
    """Both ends of the worker's control connection and of the supervisor's connection to
    the SDK plugin ask for ``SEND_BUFFER`` (the kernel doubles it, up to wmem_max): a 1 MiB
    frame is one write, not ~6 of the default 208 KiB (docs/ARCHITECTURE.md, big frames)."""
    status, _, body = _call(srv, "GET", f"bsdk/bytes/{MIB}")
    assert status == 200, body[:200]
    wmem_max = int(Path("/proc/sys/net/core/wmem_max").read_text())
    want = 2 * min(SEND_BUFFER, wmem_max)
    tb, peer, at = _unix_send_buffers()
    run = srv.home / "run"
    ends = {
        "supervisor's end of a worker's control connection": at.get(str(run / "supervisor.sock")),
        "SDK plugin's end of the supervisor's connection": [
            inode
            for path, inodes in at.items()
            if path.startswith(str(run / "p" / "bodies-sdk") + "/")
            for inode in inodes
        ],
    }
    for what, inodes in ends.items():
        assert inodes, f"no {what} in ss -xm"
        for inode in inodes:
            assert tb[inode] >= want, (what, tb[inode])
            assert tb.get(peer[inode], 0) >= want, ("the other end of the " + what, tb[peer[inode]])
