"""What every framed asyncio connection of the supervisor shares: decode on read, cork writes.

``PluginConnection`` (to a plugin) and ``ControlConnection`` (from a worker or the CLI) are
both a ``FramedProtocol``: bytes go through the one codec's ``Decoder``, each message to
``on_message``, a bad frame to ``on_protocol_error``; outgoing frames are queued and written
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
    enough.
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
        if cls.depth:
            return
        while cls.dirty:
            dirty, cls.dirty = cls.dirty, []
            for conn in dirty:
                conn._flush()


_ts_cache: list[Any] = [0, ""]


def fast_timestamp() -> str:
    """ISO-8601 UTC with milliseconds, formatted at most once per millisecond."""
    t = time.time()
    ms = int(t * 1000)
    if ms != _ts_cache[0]:
        _ts_cache[0] = ms
        _ts_cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{ms % 1000:03d}Z"
    return _ts_cache[1]


class FramedProtocol(asyncio.Protocol):
    """Base of the supervisor's framed connections (see the module docstring)."""

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self.decoder = Decoder(max_frame)
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        WriteBatch.begin()
        try:
            try:
                msgs = self.decoder.feed(data)
            except ProtocolError as exc:
                for msg in exc.decoded:
                    self.on_message(msg)
                self.on_protocol_error(exc)
                return
            for msg in msgs:
                self.on_message(msg)
        finally:
            WriteBatch.end()

    def on_message(self, msg: dict[str, Any]) -> None:
        raise NotImplementedError

    def on_protocol_error(self, exc: ProtocolError) -> None:
        raise NotImplementedError

    @property
    def writable(self) -> bool:
        return self.transport is not None

    def queue_frame(self, frame: bytes) -> None:
        """Write ``frame`` with everything else queued in this batch."""
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            WriteBatch.schedule(self, self._loop)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        if not out:
            return
        self._out = []
        if self.writable:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))  # type: ignore[union-attr]
