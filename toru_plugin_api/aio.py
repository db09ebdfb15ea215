"""The one asyncio adapter of the protocol: framed connections with request/reply by id.

Every asyncio connection of Toru (the supervisor's connections to plugins and from workers,
the SDK runtime's connections from the host, the web workers' control client) subclasses
``FramedProtocol``. Stdlib only: the SDK must import without uvloop or ujson.

Reading: ``data_received`` feeds the one codec's ``Decoder``; every message (with
``parse=False``, every frame's raw JSON bytes, or ``(json, body)`` for a binary frame) goes
to ``on_message``, a bad frame to ``on_protocol_error`` after the good frames before it. The
rest of a big frame is received in place (``_BigFrameReader``, which also reads the start
of the frame after it, and hands back to ``data_received`` at a read of small frames only).
Every Unix connection asks for a ``SEND_BUFFER`` that takes a 1 MiB frame in one write.
Writing a batch of 64 KiB or more uses ``writelines`` (no joined copy).

Writing: ``send(msg)`` / ``queue_frame(*parts)`` cork. Frames queued while a
``data_received`` runs go out when it returns, one ``transport.write`` per connection
(``WriteBatch``); frames queued anywhere else (a timer, a task) go out on the next loop
iteration, also one write per connection.

Requests (the client side)::

    fut = conn.request({"type": "http", "payload": {...}}, timeout=5.0)  # sets msg["request_id"]
    reply = await fut            # the whole reply message

``request`` allocates an id (a string) into ``msg[id_field]`` and returns a Future. The
lower level is ``next_id()`` + ``expect(rid, timeout, callback)`` + ``queue_frame(...)``,
for callers that build frames by hand or want a plain callback (no Future) per request:
``callback(reply, None)`` or ``callback(None, error)`` is called exactly once. Deadlines
share one timer armed for the earliest. A reply with an unknown or late id goes to
``on_unsolicited`` (ignored by default). On expiry the caller gets ``timeout_error(rid)``;
when the connection is lost or ``fail_connection()``ed, every pending request gets
``lost_error(reason)`` at once. Override those two to raise your own error types.

Hooks for subclasses: ``on_message`` (default: match replies by id), ``on_messages`` (one
read's messages together), ``on_unsolicited``, ``on_protocol_error`` (default:
``fail_connection``), ``on_expired(rid, deadline)``, ``on_closed(reason)``,
``timeout_error``, ``lost_error``; attributes ``id_field`` (``"id"`` for the control
protocol) and ``eof_reason``. Closing: ``close(reason)`` flushes what is queued first,
``fail_connection(reason)`` aborts; both are idempotent and fail what is pending.
"""

from __future__ import annotations

import asyncio
import math
import socket
import threading
from typing import Any

from .codec import (
    DEFAULT_MAX_FRAME,
    Body,
    Decoder,
    ProtocolError,
    dumps,
    encode,
    encode_binary,
)
from .endpoint import Pending

__all__ = ["FramedProtocol", "WriteBatch"]

_local = threading.local()
BIG_WRITE = 64 * 1024  # a batch from this size on goes out by writelines, not joined
# PERF: the send buffer every framed Unix-socket connection asks for (``connection_made``).
# Linux doubles it (4 MiB in flight: a 1 MiB frame is one write, and a few of them queued
# to one worker do not wait for each other) and caps it at ``net.core.wmem_max``. The
# default (``wmem_default``, 208 KiB) cut each 1 MiB frame into ~6 writes and as many reads
# and wake-ups on the other side; 2 MiB measured a little cheaper than 1 MiB (benchmarks/
# RESULTS.md, "Large bodies"). A stream socket's memory is charged only while data sits
# in it, so an idle connection costs nothing more (docs/ARCHITECTURE.md).
SEND_BUFFER = 2 * 1024 * 1024


class WriteBatch:
    """PERF: frames queued while one ``data_received`` runs go out when it returns.

    A control request queues a frame to a plugin, a plugin reply queues a frame to a
    control connection; flushing those at the end of the ``data_received`` that caused them
    (one ``transport.write`` per connection) saves the extra loop iteration of a
    ``call_soon`` flush on every hop. One batch per thread (an event loop runs on one
    thread); ``FramedProtocol`` inlines ``begin``/``end`` on its hot path.
    """

    __slots__ = ("depth", "dirty")

    def __init__(self) -> None:
        self.depth = 0
        self.dirty: list[FramedProtocol] = []

    @staticmethod
    def current() -> WriteBatch:
        """This thread's batch."""
        batch = getattr(_local, "batch", None)
        if batch is None:
            batch = _local.batch = WriteBatch()
        return batch

    def begin(self) -> None:
        self.depth += 1

    def end(self) -> None:
        self.depth -= 1
        if not self.depth and self.dirty:
            self.flush_dirty()

    def flush_dirty(self) -> None:
        """Flush every connection queued in the batch; one failing write strands no other."""
        while self.dirty:
            dirty, self.dirty = self.dirty, []
            for conn in dirty:
                try:
                    conn._flush()
                except (OSError, RuntimeError):  # a transport closed under us: its loss follows
                    conn._flush_scheduled = False


class _BigFrameReader(asyncio.BufferedProtocol):
    """PERF: while big frames (``codec.BIG_FRAME`` and up) arrive, the transport reads
    straight into the frame's own buffer (``Decoder.big_view``): no intermediate ``bytes``
    per read, no copy. Set as the transport's protocol once a big frame has begun; between
    two big frames it reads the next frame's start into a small buffer of its own
    (``HEAD_READ``), so the next big frame's first read is not a 256 KiB ``bytes`` that
    ``data_received`` gets and the decoder copies once more. A read that holds only small
    frames hands the connection back to the plain ``data_received`` path of the hot path
    (the always-buffered protocol measured 15-25% slower there). Everything else is the
    owner's."""

    __slots__ = ("head", "owner")

    # PERF: the start of the frame after a big one is read into this much; a big frame's
    # JSON part is far smaller, and what it brings of the body is copied once, not twice.
    HEAD_READ = 16 * 1024

    def __init__(self, owner: FramedProtocol) -> None:
        self.owner = owner
        self.head = memoryview(bytearray(self.HEAD_READ))

    def get_buffer(self, sizehint: int) -> memoryview:
        view = self.owner.decoder.big_view()
        return self.head if view is None else view

    def buffer_updated(self, nbytes: int) -> None:
        owner = self.owner
        decoder = owner.decoder
        into_head = not decoder.receiving_big  # what get_buffer saw: nothing ran between
        try:
            if into_head:
                owner._received(decoder.feed, bytes(self.head[:nbytes]))
            else:
                owner._received(decoder.filled, nbytes)
        finally:
            t = owner.transport
            if into_head and not decoder.receiving_big and t is not None and not t.is_closing():
                t.set_protocol(owner)  # small frames only: back to data_received

    def eof_received(self) -> bool | None:
        return self.owner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.owner.pause_writing()

    def resume_writing(self) -> None:
        self.owner.resume_writing()


class FramedProtocol(asyncio.Protocol):
    """Base of every framed asyncio connection (see the module docstring).

    Create it on the loop's thread (it binds the running loop and the thread's batch).
    """

    id_field = "request_id"  # where requests carry their id and replies echo it
    eof_reason = "connection closed by the peer"  # the close reason of a clean EOF

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, parse: bool = True) -> None:
        self.max_frame = max_frame
        self.decoder = Decoder(max_frame, parse=parse)
        self.transport: asyncio.Transport | None = None
        self.pending = Pending()
        self.closed = False
        self.close_reason = ""
        self._out: list[bytes | bytearray | memoryview] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._batch = WriteBatch.current()
        self._big_reader: _BigFrameReader | None = None

    # ------------------------------------------------------------------ asyncio side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family == socket.AF_UNIX:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
            except OSError:  # pragma: no cover - a platform without SO_SNDBUF: keep its size
                pass

    def data_received(self, data: bytes) -> None:
        self._received(self.decoder.feed, data)
        if self.decoder.receiving_big:  # the rest of a big frame: read it in place
            t = self.transport
            if t is not None and not t.is_closing():
                if self._big_reader is None:
                    self._big_reader = _BigFrameReader(self)
                t.set_protocol(self._big_reader)

    def _received(self, decode: Any, data: Any) -> None:
        batch = self._batch
        batch.depth += 1  # batch.begin(), inlined
        try:
            try:
                msgs = decode(data)
            except ProtocolError as exc:
                msgs, bad = exc.decoded, exc
            else:
                bad = None
            try:
                if msgs:
                    self.on_messages(msgs)
            except ProtocolError as exc:  # on_message found a frame it cannot use
                bad = exc
            if bad is not None:
                self.on_protocol_error(bad)
        finally:
            batch.depth -= 1  # batch.end(), inlined
            if not batch.depth and batch.dirty:
                batch.flush_dirty()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None  # gone: nothing to close or abort
        self.fail_connection(f"connection lost: {exc}" if exc else self.eof_reason)

    # ------------------------------------------------------------------ hooks

    def on_message(self, msg: Any) -> None:
        """One decoded message (raw payload bytes with ``parse=False``).

        Default: a reply is handed to the request waiting for its id, anything else to
        ``on_unsolicited``. May raise ``ProtocolError`` for a frame it cannot use: the rest
        of the chunk is dropped and ``on_protocol_error`` follows.
        """
        entry = self.pending.take(msg.get(self.id_field))
        if entry is None:
            self.on_unsolicited(msg)
        else:
            entry[0](msg, None)

    def on_messages(self, msgs: list[Any]) -> None:
        """Every message of one read, in order (default: ``on_message`` for each); override
        to treat a pipelined chunk as a unit (the host's kv channel commits it once)."""
        for msg in msgs:
            self.on_message(msg)

    def on_unsolicited(self, msg: Any) -> None:
        """A message that answers no pending request (late, unknown id, or a request)."""

    def on_protocol_error(self, exc: ProtocolError) -> None:
        """A bad frame: fail the connection (never guess where the next frame starts)."""
        self.fail_connection(f"protocol error: {exc}")

    def on_expired(self, rid: str, deadline: float) -> None:
        """Request ``rid`` passed its deadline (its caller already got ``timeout_error``)."""

    def on_closed(self, reason: str) -> None:
        """The connection is done (called once, after pending requests were failed)."""

    def timeout_error(self, rid: str) -> BaseException:
        return TimeoutError(f"no reply to request {rid} in time")

    def lost_error(self, reason: str) -> BaseException:
        return ConnectionError(reason)

    # ------------------------------------------------------------------ writing

    @property
    def writable(self) -> bool:
        return self.transport is not None and not self.closed

    def send(self, msg: Any, body: Body | None = None) -> None:
        """Queue one message (dropped if the connection is closed), with ``body`` as the raw
        tail of a binary frame when given. Raises ``FrameTooLarge``."""
        if not self.closed:
            if body is None:
                self.queue_frame(encode(msg, self.max_frame))
            else:
                self.queue_binary(dumps(msg), body)

    def queue_binary(self, head: bytes, body: Body) -> None:
        """Queue a binary frame of serialized JSON ``head`` and a raw ``body`` (bytes-like, or
        a list of parts: a big body's parts stay parts of their own). Raises ``FrameTooLarge``."""
        self.queue_frame(*encode_binary(head, body, self.max_frame))

    def queue_frame(self, *parts: bytes | bytearray | memoryview) -> None:
        """Write a frame (given as one or more consecutive parts) with the rest of this batch.

        PERF: a frame under ``BIG_WRITE`` given in parts is joined here, so a batch of one
        frame (the common case) is written as it is; a bigger one keeps its parts, which
        ``_flush`` writes with ``writelines`` (a big body is never copied into a frame).
        """
        if len(parts) > 1 and sum(map(len, parts)) < BIG_WRITE:
            self._out.append(b"".join(parts))
        else:
            self._out.extend(parts)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            batch = self._batch
            if batch.depth:
                batch.dirty.append(self)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        t = self.transport
        if t is not None and not self.closed and not t.is_closing():
            if len(out) == 1:
                t.write(out[0])
            elif sum(map(len, out)) >= BIG_WRITE:
                t.writelines(out)  # PERF: a big body (in one part or many) is not joined
            else:
                t.write(b"".join(out))

    # ------------------------------------------------------------------ requests

    def next_id(self) -> str:
        return self.pending.next_id()

    def expect(self, rid: str, timeout: float, callback: Any, data: Any = None) -> None:
        """Wait ``timeout`` seconds for the reply to ``rid``: ``callback(reply, None)`` or
        ``callback(None, error)`` follows exactly once (at once if already closed)."""
        if self.closed:
            callback(None, self.lost_error(self.close_reason))
            return
        if self.pending.add(rid, self._loop.time() + timeout, callback, data):
            self._arm()

    def request(
        self, msg: dict[str, Any], timeout: float, body: Body | None = None
    ) -> asyncio.Future[Any]:
        """Send ``msg`` as a request (its id set in ``msg[id_field]``), in a binary frame
        carrying ``body`` when given; the Future gets the whole reply message, or the
        error. Cancelling the Future abandons the reply."""
        rid = msg[self.id_field] = self.next_id()
        try:
            if body is None:
                frame: tuple[Any, ...] = (encode(msg, self.max_frame),)
            else:
                frame = encode_binary(dumps(msg), body, self.max_frame)
        except ProtocolError as exc:
            fut: asyncio.Future[Any] = self._loop.create_future()
            fut.set_exception(exc)
            return fut
        return self.request_frame(rid, frame, timeout)

    def request_frame(self, rid: str, parts: Any, timeout: float) -> asyncio.Future[Any]:
        """Send a request already framed by the caller (``parts``, with ``rid`` from
        ``next_id()`` in it); the Future gets the whole reply message, or the error."""
        fut: asyncio.Future[Any] = self._loop.create_future()

        def done(reply: Any, err: BaseException | None) -> None:
            if not fut.done():
                if err is None:
                    fut.set_result(reply)
                else:
                    fut.set_exception(err)

        self.expect(rid, timeout, done)
        if not self.closed:
            self.queue_frame(*parts)
        return fut

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(self.pending.earliest, self._sweep)

    def _sweep(self) -> None:
        """Expire every request whose deadline passed, re-arm for the next."""
        self._timer = None
        for rid, entry in self.pending.expire(self._loop.time() + 0.001):  # timers fire early
            entry[0](None, self.timeout_error(rid))
            self.on_expired(rid, entry[1])
        if self.pending.earliest != math.inf and not self.closed:
            self._arm()

    # ------------------------------------------------------------------ closing

    def fail_connection(self, reason: str, abort: bool = True) -> None:
        """Close the connection and fail every pending request at once (idempotent).

        ``abort`` drops what is buffered in the transport; otherwise it is flushed first.
        """
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._out.clear()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        entries = self.pending.drain()
        if entries:
            err = self.lost_error(reason)
            for entry in entries:
                entry[0](None, err)
        self.on_closed(reason)

    def close(self, reason: str = "closed") -> None:
        """Flush what is queued, close, fail whatever is pending (idempotent)."""
        if not self.closed:
            if self.transport is not None and self._out:
                self._flush()
            self.fail_connection(reason, abort=False)
