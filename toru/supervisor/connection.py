"""The one persistent connection from the supervisor to a plugin (asyncio Protocol).

Requests are pipelined and matched by ``request_id`` (original plugins answer in order on a
single connection, SDK plugins may answer out of order: both work). Each request has a
deadline: on expiry its caller gets 504 at once and a late answer is dropped. When the
connection breaks or the plugin sends something that is not a valid frame (including a
length prefix above the maximum frame size, checked before any payload is buffered), every
pending request gets 502 at once.

PERF: this is the hot path of every proxied request. Replies are delivered by plain
callbacks (no Future or Task per request) and outgoing frames are corked: everything queued
during one loop iteration goes out in one ``transport.write``.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from toru.errors import BadGateway, GatewayTimeout, ToruError
from toru_plugin_api.codec import ProtocolError, dumps, encode_payload

from .framed import FramedProtocol, fast_timestamp

ReplyCallback = Callable[[dict[str, Any] | None, ToruError | None], None]
CLEAN_EOF = "connection closed by the plugin"


class PluginConnection(FramedProtocol):
    """Client side of protocol v1 over one Unix-socket connection to one plugin."""

    def __init__(
        self,
        plugin_id: str,
        max_frame: int,
        on_lost: Callable[[str], None] | None = None,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(max_frame)
        self.plugin_id = plugin_id
        self.on_lost = on_lost
        self.on_timeout = on_timeout
        # rid -> (callback, deadline on the loop clock). PERF: one timer per connection,
        # armed for the earliest deadline, instead of a call_later + cancel per request.
        self.pending: dict[str, tuple[ReplyCallback, float]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        self.closed = False
        self.close_reason = ""
        self._seq = 0

    # ------------------------------------------------------------------ asyncio side

    def on_protocol_error(self, exc: ProtocolError) -> None:
        self._fail(f"protocol error: {exc}")

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"connection lost: {exc}" if exc else CLEAN_EOF)

    # ------------------------------------------------------------------ requests

    def on_message(self, msg: dict[str, Any]) -> None:
        rid = msg.get("request_id")
        entry = self.pending.pop(rid, None) if rid is not None else None
        if entry is None:
            if rid is not None and not isinstance(rid, str):
                entry = self.pending.pop(str(rid), None)
            if entry is None:
                return  # a late answer to a timed-out request, or an unsolicited message
        callback = entry[0]
        payload = msg.get("payload")
        if type(payload) is not dict:
            callback(None, BadGateway(f"plugin {self.plugin_id} sent a reply without a payload"))
            return
        callback(payload, None)

    def request(
        self, type_: str, payload: dict[str, Any], timeout: float, callback: ReplyCallback
    ) -> str:
        """Send a request; ``callback(payload, None)`` or ``callback(None, error)`` exactly once."""
        if self.closed:
            callback(None, BadGateway(f"plugin {self.plugin_id} is not connected"))
            return ""
        self._seq += 1
        rid = str(self._seq)
        body = dumps(
            {"type": type_, "timestamp": fast_timestamp(), "request_id": rid, "payload": payload}
        )
        try:
            frame = encode_payload(body, self.max_frame)
        except ProtocolError as exc:
            callback(None, BadGateway(f"request too large for plugin {self.plugin_id}: {exc}"))
            return ""
        deadline = self._loop.time() + timeout
        self.pending[rid] = (callback, deadline)
        if deadline < self._timer_at:
            self._arm(deadline)
        self.queue_frame(frame)
        return rid

    async def call(self, type_: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Awaitable ``request``: the reply payload, or raises the ``ToruError``."""
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()

        def done(reply: dict[str, Any] | None, err: ToruError | None) -> None:
            if fut.done():
                return
            if err is not None:
                fut.set_exception(err)
            else:
                fut.set_result(reply or {})

        self.request(type_, payload, timeout, done)
        return await fut

    def send(self, msg: dict[str, Any]) -> None:
        """Fire-and-forget message (lifecycle); dropped if the connection is gone."""
        if not self.closed:
            self.queue_frame(encode_payload(dumps(msg), self.max_frame))

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._sweep)
        self._timer_at = deadline

    def _sweep(self) -> None:
        """Expire every request whose deadline passed (504 at once), re-arm for the next."""
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + 0.001  # timers may fire a hair early
        expired = [rid for rid, (_, deadline) in self.pending.items() if deadline <= now]
        for rid in expired:
            entry = self.pending.pop(rid, None)
            if entry is None:
                continue
            entry[0](None, GatewayTimeout(f"plugin {self.plugin_id} did not answer in time"))
            if self.on_timeout is not None:
                self.on_timeout(rid)
        if self.pending and not self.closed:
            self._arm(min(deadline for _, deadline in self.pending.values()))

    # ------------------------------------------------------------------ writing

    @property
    def writable(self) -> bool:
        return self.transport is not None and not self.closed

    # ------------------------------------------------------------------ failure

    def _fail(self, reason: str, abort: bool = True) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._out.clear()
        if self.transport is not None:
            if abort:
                self.transport.abort()
            else:
                self.transport.close()  # flushes what is buffered first
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        pending, self.pending = self.pending, {}
        err = BadGateway(f"plugin {self.plugin_id}: {reason}")
        for callback, _ in pending.values():
            callback(None, err)
        if self.on_lost is not None:
            self.on_lost(reason)

    def close(self, reason: str = "closed by the supervisor") -> None:
        """Close and fail whatever is pending with 502 (idempotent)."""
        if not self.closed:
            if self.transport is not None and self._out:
                self._flush()  # let a queued shutdown message out first
            self.on_lost = None  # intentional: the owner knows
            self._fail(reason, abort=False)
