"""``DirectChannel`` against a scripted plugin on a real Unix socket, on a real event loop:
every kind of bad answer is a clear 502/504 (never a hang, never a 500), and a request that
could not be handed over falls back to the supervisor path (``None``) instead of failing."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.loops import run_async
from toru.errors import BadGateway, GatewayTimeout, SupervisorUnavailable, ToruError
from toru.supervisor.route_generation import RouteGeneration
from toru.wsgi.direct import DirectChannel, Reporter
from toru.wsgi.routes import RouteTable
from toru_plugin_api.codec import FrameReader, encode


class FakeControl:
    """The supervisor's side: ``list`` and ``routes`` for one plugin, ``ping``, ``report``."""

    def __init__(self, gen: RouteGeneration, sock_path: str) -> None:
        self.gen = gen
        self.sock_path = sock_path
        self.supervisor_up = True
        self.routes_ok = True
        self.calls: list[str] = []
        self.reports: list[dict] = []

    async def call(self, op: str, args: dict | None = None, timeout: float | None = None) -> Any:
        self.calls.append(op)
        if not self.supervisor_up:
            raise SupervisorUnavailable("the supervisor is not reachable")
        if op == "list":
            return [{"id": "p", "route": "/p"}]
        if op == "routes":
            if not self.routes_ok:
                raise ToruError("unknown control operation 'routes'", status=400)
            return {
                "generation": self.gen.value,
                "routes": {"/p": {"plugin": "p", "socket": self.sock_path, "pid": 1}},
            }
        if op == "report":
            self.reports.append(args or {})
        return {"ok": True}


class ScriptedPlugin:
    """Accepts connections; answers each request with ``answer(msg) -> bytes | None``."""

    def __init__(self, path: str, answer) -> None:
        self.answer = answer
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        self.listener.listen(8)
        self.requests: list[dict] = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._conn, args=(conn,), daemon=True).start()

    def _conn(self, conn: socket.socket) -> None:
        reader = FrameReader(conn)
        with conn:
            while True:
                try:
                    msg = reader.read()
                except Exception:
                    return
                if msg is None:
                    return
                self.requests.append(msg)
                out = self.answer(msg)
                if out is None:
                    return  # close without answering
                if out:
                    conn.sendall(out)

    def close(self) -> None:
        self.listener.close()


def _reply(msg: dict, payload: Any, rid: str | None = None) -> bytes:
    return encode({"type": "http", "request_id": rid or msg["request_id"], "payload": payload})


@pytest.fixture
def env(tmp_path: Path):
    gen = RouteGeneration(tmp_path / "routes.gen")
    sock_path = str(tmp_path / "p.sock")
    control = FakeControl(gen, sock_path)
    plugins: list[ScriptedPlugin] = []

    def make(answer, http_timeout: float = 2.0) -> DirectChannel:
        plugins.append(ScriptedPlugin(sock_path, answer))
        control.plugin = plugins[-1]
        routes = RouteTable(control, tmp_path / "routes.gen")
        return DirectChannel(control, routes, http_timeout, 1 << 20)

    yield make, control, gen
    for p in plugins:
        p.close()


async def _get(channel: DirectChannel, route: str = "/p"):
    """What the proxy does: direct when the table gives a socket, else None."""
    entry = await channel.routes.get(route)
    if entry is None or entry.socket is None:
        return None
    return await channel.http(entry, "GET", "/x?y=1", {"X-A": "1"}, b"\xff\x00")


def test_good_reply_and_the_request_the_plugin_sees(env):
    make, control, _ = env
    seen = {}

    def answer(msg):
        seen.update(msg)
        return _reply(msg, {"status": 201, "headers": {"A": "b"}, "body": "ok"})

    async def main():
        channel = make(answer)
        resp = await _get(channel)
        assert (resp.status, resp.headers, resp.body) == (201, {"A": "b"}, b"ok")
        inner = seen["payload"]["payload"]  # nested exactly as DESIGN.md says
        assert inner["method"] == "GET" and inner["path"] == "/x?y=1"
        assert inner["body_encoding"] == "base64"  # non-UTF-8 bodies travel base64
        assert seen["type"] == "http" and "timestamp" in seen
        assert sorted(control.calls) == ["list", "routes"]
        await _get(channel)
        assert sorted(control.calls) == ["list", "routes"]  # reused until the counter moves

    run_async(main())


def test_concurrent_requests_share_one_connection(env):
    make, control, _ = env

    async def main():
        channel = make(lambda msg: _reply(msg, {"status": 200, "body": msg["request_id"]}))
        answers = await asyncio.gather(*[_get(channel) for _ in range(20)])
        assert len({a.body for a in answers}) == 20  # each got its own reply, by id
        assert control.plugin.connections == 1  # one connect, shared by all twenty

    run_async(main())


def test_unknown_route_and_missing_table_fall_back(env):
    make, control, gen = env

    async def main():
        channel = make(lambda msg: _reply(msg, {"status": 200}))
        assert await _get(channel, "/other") is None  # not in the table: the supervisor decides
        control.routes_ok = False
        gen.bump()
        assert await _get(channel) is None  # an older supervisor without `routes`
        calls = len(control.calls)
        control.routes_ok = True
        assert await _get(channel) is None  # asked again only after a second, not per request
        assert len(control.calls) == calls

    run_async(main())


@pytest.mark.parametrize(
    ("answer", "message", "dropped"),
    [
        (lambda m: b"\x00\x00\x00\x05nope!", "protocol error", True),
        (lambda m: struct.pack(">I", 1 << 30), "protocol error", True),  # oversized: not allocated
        (lambda m: _reply(m, None), "payload is not an object", False),
        (lambda m: _reply(m, {"status": 700}), "status", False),
        (lambda m: _reply(m, {"status": "200"}), "status", False),
        (lambda m: _reply(m, {"status": 200, "body": 5}), "body", False),
        (
            lambda m: _reply(m, {"status": 200, "body": "!", "body_encoding": "base64"}),
            "base64",
            False,
        ),
        (lambda m: None, "connection closed", True),  # read, then closed without an answer
    ],
)
def test_bad_answers_are_502(env, answer, message, dropped):
    make, _, _ = env

    async def main():
        channel = make(answer)
        with pytest.raises(BadGateway, match=message):
            await _get(channel)
        # a broken stream is dropped; after a well-framed bad answer it is still in step
        assert ("p" not in channel._conns) is dropped

    run_async(main())


def test_replies_for_other_ids_are_skipped(env):
    make, _, _ = env

    def answer(msg):
        return _reply(msg, {"status": 500}, rid="someone-else") + _reply(msg, {"status": 200})

    async def main():
        assert (await _get(make(answer))).status == 200

    run_async(main())


def test_no_answer_is_504_and_the_connection_stays(env):
    make, _, _ = env

    async def main():
        channel = make(lambda msg: b"", http_timeout=0.3)
        with pytest.raises(GatewayTimeout):
            await _get(channel)
        assert "p" in channel._conns  # a late reply is dropped by its id; nothing to resync
        assert channel.reporter._timeouts == {"p": 1}

    run_async(main())


def test_lost_connection_with_the_supervisor_gone_is_503(env):
    make, control, _ = env

    async def main():
        channel = make(lambda msg: None)
        await channel.routes.get("/p")  # the routes were fetched before the supervisor went
        control.supervisor_up = False
        with pytest.raises(SupervisorUnavailable):
            await _get(channel)

    run_async(main())


def test_dead_plugin_falls_back_before_anything_is_sent(env, tmp_path):
    make, _, _ = env

    async def main():
        channel = make(lambda msg: _reply(msg, {"status": 200}))
        assert (await _get(channel)).status == 200
        # the plugin goes away: the open connection breaks and its socket file is gone
        channel._conns["p"][0].transport.abort()
        (tmp_path / "p.sock").unlink()
        await asyncio.sleep(0.05)  # the loop sees the loss
        assert "p" not in channel._conns
        assert await _get(channel) is None  # connecting fails: the supervisor path
        assert await _get(channel) is None

    run_async(main())


def test_report_payload(env):
    _, control, _ = env

    async def main():
        reporter = Reporter(control)
        reporter.latency("p", 0.0012345)
        reporter.timeout("p")
        await reporter.flush()
        await reporter.flush()  # nothing new: no call
        await reporter.close()

    run_async(main())
    assert control.reports == [{"plugins": {"p": {"latencies": [0.001234], "timeouts": 1}}}]
