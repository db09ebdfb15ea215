"""The asyncio base (``toru_plugin_api.aio``) and its sans-IO bookkeeping over a socketpair.

Runs under uvloop; any exception the loop only logs fails the test.
"""

from __future__ import annotations

import asyncio
import math
import socket
import subprocess
import sys
from typing import Any

import pytest
import uvloop

from tests import timing
from tests.loops import run_async
from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.codec import Decoder, encode, frame_body
from toru_plugin_api.endpoint import Pending


class Client(FramedProtocol):
    def __init__(self) -> None:
        super().__init__(1024)
        self.unsolicited: list[Any] = []
        self.expired: list[str] = []
        self.closed_with: list[str] = []

    def on_unsolicited(self, msg: Any) -> None:
        self.unsolicited.append(msg)

    def on_expired(self, rid: str, deadline: float) -> None:
        self.expired.append(rid)

    def on_closed(self, reason: str) -> None:
        self.closed_with.append(reason)


async def connected() -> tuple[Client, socket.socket]:
    loop = asyncio.get_running_loop()
    mine, peer = socket.socketpair()
    peer.setblocking(False)
    _, conn = await loop.create_unix_connection(Client, sock=mine)
    return conn, peer


async def read_frames(peer: socket.socket, n: int) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    dec, got = Decoder(), []
    async with asyncio.timeout(timing.WAIT):
        while len(got) < n:
            got += dec.feed(await loop.sock_recv(peer, 65536))
    return got


def test_replies_match_by_id_in_any_order_and_strangers_are_ignored():
    async def scenario() -> tuple[list[Any], Client]:
        conn, peer = await connected()
        futs = [conn.request({"type": "http", "payload": {"n": i}}, timing.HTTP) for i in range(3)]
        sent = await read_frames(peer, 3)
        ids = [m["request_id"] for m in sent]
        assert all(type(i) is str for i in ids) and len(set(ids)) == 3
        replies = [
            {"request_id": ids[2], "payload": {"n": 2}},
            {"request_id": "nobody", "payload": {}},  # unknown id
            {"request_id": int(ids[0]), "payload": {"n": 0}},  # an integer is its string
            {"request_id": ids[1], "payload": {"n": 1}},
            {"request_id": ids[1], "payload": {"again": True}},  # late duplicate
        ]
        await asyncio.get_running_loop().sock_sendall(peer, b"".join(encode(r) for r in replies))
        async with asyncio.timeout(timing.WAIT):
            got = await asyncio.gather(*futs)
            while len(conn.unsolicited) < 2:
                await asyncio.sleep(0.001)
        peer.close()
        return got, conn

    got, conn = run_async(scenario())
    assert [m["payload"] for m in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert [m["request_id"] for m in conn.unsolicited] == ["nobody", got[1]["request_id"]]


def test_deadlines_share_one_timer_and_expire_in_order():
    async def scenario() -> dict[str, Any]:
        conn, peer = await connected()
        slow = conn.request({"n": "slow"}, timing.WAIT)  # arms the timer far out
        first_timer = conn._timer
        fast = conn.request({"n": "fast"}, 0.05)  # re-arms earlier: still one timer
        assert conn._timer is not first_timer and first_timer.cancelled()  # type: ignore[union-attr]
        mid = conn.request({"n": "mid"}, 0.1)  # later than the armed one: no new timer
        timer = conn._timer
        assert conn._timer is timer
        results = await asyncio.gather(fast, mid, return_exceptions=True)
        assert not slow.done() and len(conn.pending) == 1
        assert conn.pending.earliest != math.inf  # re-armed for the slow one
        conn.fail_connection("test over")
        slow_err = await asyncio.gather(slow, return_exceptions=True)
        peer.close()
        return {"results": results, "slow": slow_err[0], "conn": conn}

    out = run_async(scenario())
    assert all(isinstance(r, TimeoutError) for r in out["results"])
    assert out["conn"].expired == ["2", "3"]
    assert isinstance(out["slow"], ConnectionError) and str(out["slow"]) == "test over"
    assert out["conn"].closed_with == ["test over"]


def test_connection_loss_fails_every_pending_request_at_once():
    async def scenario() -> tuple[list[Any], Client]:
        conn, peer = await connected()
        futs = [conn.request({"n": i}, timing.WAIT) for i in range(5)]
        await read_frames(peer, 5)
        peer.close()
        async with asyncio.timeout(timing.WAIT):
            got = await asyncio.gather(*futs, return_exceptions=True)
        late = await asyncio.gather(conn.request({"n": 9}, timing.WAIT), return_exceptions=True)
        return got + late, conn

    got, conn = run_async(scenario())
    assert all(isinstance(e, ConnectionError) for e in got)
    assert conn.closed_with == ["connection closed by the peer"] and conn._timer is None


def test_a_bad_frame_delivers_what_came_before_it_then_fails_the_rest():
    async def scenario() -> tuple[Any, Any, Client]:
        conn, peer = await connected()
        a = conn.request({"n": "a"}, timing.WAIT)
        b = conn.request({"n": "b"}, timing.WAIT)
        ids = [m["request_id"] for m in await read_frames(peer, 2)]
        good = encode({"request_id": ids[0], "payload": {}})
        await asyncio.get_running_loop().sock_sendall(peer, good + b"\xff\xff\xff\xff")
        async with asyncio.timeout(timing.WAIT):
            got = await asyncio.gather(a, b, return_exceptions=True)
        peer.close()
        return got[0], got[1], conn

    a, b, conn = run_async(scenario())
    assert a["payload"] == {}
    assert isinstance(b, ConnectionError) and "maximum frame size" in str(b)
    assert conn.closed_with[0].startswith("protocol error")


def test_pending_bookkeeping_without_io():
    p = Pending()
    calls: list[Any] = []
    r1, r2, r3 = p.next_id(), p.next_id(), p.next_id()
    assert p.add(r1, 10.0, calls.append) is True
    assert p.add(r2, 5.0, calls.append) is True  # earlier: re-arm
    assert p.add(r3, 7.0, calls.append, "data") is False
    assert p.earliest == 5.0
    assert p.take(True) is None and p.take(None) is None and p.take(2.0) is None
    assert p.take(int(r3)) == (calls.append, 7.0, "data")
    assert p.take(r3) is None  # taken once
    assert [rid for rid, _ in p.expire(6.0)] == [r2]
    assert p.earliest == 10.0
    assert len(p.drain()) == 1 and p.earliest == math.inf and len(p) == 0


class Big(FramedProtocol):
    """Keeps every message; a 16 MiB frame limit."""

    def __init__(self) -> None:
        super().__init__()
        self.got: list[Any] = []

    def on_message(self, msg: Any) -> None:
        self.got.append(msg)


def _big_frames_in_place(loop_factory: Any) -> None:
    """Big binary frames (read in place by the big-frame reader) between small ones, on a
    real socket; the protocol goes back to plain reads after each big frame."""
    body = bytes(range(256))[::-1] * (3 * 1024 * 4)  # 3 MiB, not UTF-8

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        errors: list[Any] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        mine, peer = socket.socketpair()
        peer.setblocking(False)
        transport, conn = await loop.create_unix_connection(Big, sock=mine)
        stream = b"".join(
            [
                encode({"n": 1}),
                encode({"n": 2}, body=body),
                encode({"n": 3}),
                encode({"n": 4}, body=body[:300_000]),
                encode({"n": 5}, body=b""),
            ]
        )
        for i in range(0, len(stream), 100_000):  # the big frames arrive over many reads
            await loop.sock_sendall(peer, stream[i : i + 100_000])
            await asyncio.sleep(0)
        async with asyncio.timeout(timing.WAIT):
            while len(conn.got) < 5:
                await asyncio.sleep(0.01)
        assert [m["n"] for m in conn.got] == [1, 2, 3, 4, 5]
        assert frame_body(conn.got[1]) == body and frame_body(conn.got[3]) == body[:300_000]
        assert frame_body(conn.got[4]) == b"" and frame_body(conn.got[0]) is None
        assert conn._big_reader is not None  # the big frames were received in place
        assert transport.get_protocol() is conn  # back to data_received after the big ones
        transport.close()
        peer.close()
        assert not errors, errors

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())


def test_big_frames_are_read_in_place_on_uvloop():
    _big_frames_in_place(uvloop.new_event_loop)


def test_big_frames_are_read_in_place_on_the_stdlib_loop():  # the SDK without uvloop
    _big_frames_in_place(asyncio.new_event_loop)


# A real writer process: N big binary frames back to back, then a small one, in one sendall
# (the way a plugin's answers or a worker's request bodies follow each other on a connection).
_WRITER = """
import socket, sys
from toru_plugin_api.codec import encode
n, size = int(sys.argv[2]), int(sys.argv[3])
body = bytes(range(256)) * (size // 256)
stream = b"".join([encode({"n": i}, body=body) for i in range(n)] + [encode({"n": n})])
sock = socket.socket(fileno=int(sys.argv[1]))
sock.sendall(stream)
sys.stdin.read()  # the socket stays open (no EOF) until the test is done
"""


class CountsPlainReads(Big):
    """Counts the reads that went through ``data_received`` (a 256 KiB ``bytes`` each)."""

    def __init__(self) -> None:
        super().__init__()
        self.plain_reads = 0

    def data_received(self, data: bytes) -> None:
        self.plain_reads += 1
        super().data_received(data)


@pytest.mark.parametrize(
    "loop_factory", [uvloop.new_event_loop, asyncio.new_event_loop], ids=["uvloop", "stdlib"]
)
def test_big_frames_back_to_back_stay_on_the_in_place_reader(loop_factory):
    """After a big frame the next frame's start is read into the big-frame reader's small
    head buffer: consecutive big frames never go through ``data_received`` (whose chunk the
    decoder would copy into the body once more); a read of small frames only goes back."""
    n, size = 4, 1024 * 1024

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        errors: list[Any] = []
        loop.set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        mine, peer = socket.socketpair()
        transport, conn = await loop.create_unix_connection(CountsPlainReads, sock=mine)
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(peer.fileno()), str(n), str(size)],
            pass_fds=[peer.fileno()],
            stdin=subprocess.PIPE,
        )
        peer.close()
        try:
            async with asyncio.timeout(timing.WAIT):
                while len(conn.got) < n + 1:
                    await asyncio.sleep(0.01)
            body = bytes(range(256)) * (size // 256)
            assert [m["n"] for m in conn.got] == list(range(n + 1))
            assert all(frame_body(m) == body for m in conn.got[:n])
            # the first big frame's start comes by data_received, the others' by the head
            # buffer (2: a read that ended inside a frame's 8-byte header hands one back)
            assert conn.plain_reads <= 2, conn.plain_reads
            assert transport.get_protocol() is conn  # the small frame: back to data_received
        finally:
            writer.communicate(timeout=timing.WAIT)
        transport.close()
        assert not errors, errors

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
