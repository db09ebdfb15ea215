"""What every framed asyncio connection of the supervisor shares: decode on read, cork writes.

``PluginConnection`` (to a plugin) and ``ControlConnection`` (from a worker or the CLI) are
both a ``FramedProtocol``: bytes go through the one codec's ``Decoder``, each message (or,
with ``parse=False``, each frame's raw JSON bytes) to ``on_message``, a bad frame to
``on_protocol_error``; outgoing frames are queued and written
in one ``transport.write`` per batch (see ``WriteBatch``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from toru_plugin_api.codec import Decoder, ProtocolError


class WriteBatch:
    """PERF: frames queued while one ``data_received`` runs go out when it returns.

    A control request queues a frame to a plugin, a plugin reply queues a frame to a
    control connection; flushing those at the end of the ``data_received`` that caused them
    (one ``transport.write`` per connection) saves the extra loop iteration of a
    ``call_soon`` flush on every hop. Writes from anywhere else (timers, tasks) still go
    through ``call_soon``. The event loop is single-threaded, so one module-level batch is
    enough. ``FramedProtocol`` inlines ``begin``/``end``/``schedule`` on its hot path (the
    same three steps, without the method calls).
    """

    depth = 0
    dirty: list[Any] = []

    @classmethod
    def schedule(cls, conn: Any, loop: asyncio.AbstractEventLoop) -> None:
        """Flush ``conn`` at the end of the current batch, or on the next loop iteration."""
        if cls.depth:
            cls.dirty.append(conn)
        else:
            loop.call_soon(conn._flush)

    @classmethod
    def begin(cls) -> None:
        cls.depth += 1

    @classmethod
    def end(cls) -> None:
        cls.depth -= 1
        if not cls.depth and cls.dirty:
            cls.flush_dirty()

    @classmethod
    def flush_dirty(cls) -> None:
        """Flush every connection queued in the batch; one failing write strands no other."""
        while cls.dirty:
            dirty, cls.dirty = cls.dirty, []
            for conn in dirty:
                try:
                    conn._flush()
                except (OSError, RuntimeError):  # a transport closed under us: its loss follows
                    conn._flush_scheduled = False


_ts_ms: list[Any] = [0, b""]  # the millisecond, its timestamp
_ts_second: list[Any] = [0, b""]  # the second, b"YYYY-MM-DDTHH:MM:SS"


def fast_timestamp_bytes() -> bytes:
    """ISO-8601 UTC with milliseconds as ASCII bytes, formatted at most once per millisecond.

    PERF: strftime runs once per second; a sequential peer starts a new millisecond on
    almost every message (2.5 -> 0.3-0.9 µs per new millisecond). The loop is single-threaded.
    """
    ms = int(time.time() * 1000)
    cache = _ts_ms
    if ms != cache[0]:
        sec = ms // 1000
        if sec != _ts_second[0]:
            _ts_second[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode()
            _ts_second[0] = sec
        cache[1] = b"%s.%03dZ" % (_ts_second[1], ms % 1000)
        cache[0] = ms
    return cache[1]


def fast_timestamp() -> str:
    """``fast_timestamp_bytes()`` as text."""
    return fast_timestamp_bytes().decode()


class FramedProtocol(asyncio.Protocol):
    """Base of the supervisor's framed connections (see the module docstring)."""

    def __init__(self, max_frame: int, *, parse: bool = True) -> None:
        self.max_frame = max_frame
        self.decoder = Decoder(max_frame, parse=parse)
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        batch = WriteBatch
        batch.depth += 1  # WriteBatch.begin(), inlined
        try:
            try:
                msgs = self.decoder.feed(data)
            except ProtocolError as exc:
                msgs, bad = exc.decoded, exc
            else:
                bad = None
            try:
                for msg in msgs:
                    self.on_message(msg)
            except ProtocolError as exc:  # on_message found a frame it cannot use
                bad = exc
            if bad is not None:
                self.on_protocol_error(bad)
        finally:
            batch.depth -= 1  # WriteBatch.end(), inlined
            if not batch.depth and batch.dirty:
                batch.flush_dirty()

    def on_message(self, msg: dict[str, Any]) -> None:
        """One decoded message (raw payload bytes with ``parse=False``).

        May raise ``ProtocolError`` for a frame it cannot use: the rest of the chunk is
        dropped and ``on_protocol_error`` follows.
        """
        raise NotImplementedError

    def on_protocol_error(self, exc: ProtocolError) -> None:
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        return self.transport is not None

    def queue_frame(self, *parts: bytes) -> None:
        """Write a frame (given as one or more consecutive parts) with the rest of this batch.

        PERF: a frame passed in parts is joined once, with the whole batch, in ``_flush``.
        """
        self._out.extend(parts)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            if WriteBatch.depth:  # WriteBatch.schedule(), inlined
                WriteBatch.dirty.append(self)
            else:
                self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        if self.writable and not self.transport.is_closing():  # type: ignore[union-attr]
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
