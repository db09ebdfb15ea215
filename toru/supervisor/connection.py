"""The one persistent connection from the supervisor to a plugin (asyncio Protocol).

Requests are pipelined and matched by ``request_id`` (original plugins answer in order on a
single connection, SDK plugins may answer out of order: both work). Each request has a
deadline: on expiry its caller gets 504 at once and a late answer is dropped. When the
connection breaks or the plugin sends something that is not a valid frame (including a
length prefix above the maximum frame size, checked before any payload is buffered), every
pending request gets 502 at once.

Progress, for the health rule (docs/ARCHITECTURE.md, "Health"): a request whose deadline
passed stays *owed* until its late answer arrives, and ``last_reply`` is when any answer
last came. ``stalled_for`` turns both into "seconds the plugin has answered nothing since it
went past a deadline", so a busy one-connection plugin is judged by progress, not by a probe
queued behind its work.

PERF: this is the hot path of every proxied request. Replies are delivered by plain
callbacks (no Future or Task per request) and outgoing frames are corked: everything queued
during one loop iteration goes out in one ``transport.write``. A relayed request
(``relay_http``) is written by concatenation around ``dumps(args)``, and its reply is handed
to the target with its raw bytes, so the control reply can embed them instead of
re-encoding the parsed message (every frame is still parsed and validated here).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Protocol

from toru.errors import BadGateway, GatewayTimeout, ToruError
from toru_plugin_api.codec import HEADER, ProtocolError, dumps, encode_payload, loads

from .framed import FramedProtocol, fast_timestamp, fast_timestamp_bytes

ReplyCallback = Callable[[dict[str, Any] | None, ToruError | None], None]
RawReplyCallback = Callable[[dict[str, Any], bytes], None]
CLEAN_EOF = "connection closed by the plugin"
MAX_OWED = 4096  # timed-out requests remembered per connection (the oldest ones count)


class RelayTarget(Protocol):
    """Who gets the answer of ``relay_http``: the parsed reply with its raw frame, or an error.

    ``__call__(None, err)`` is the timeout (504) or connection failure (502) path, shared
    with ordinary ``ReplyCallback``s; ``relayed(msg, raw)`` gets the whole reply message
    (already parsed, its payload not yet checked) and the exact JSON bytes it came from.
    """

    def __call__(self, reply: dict[str, Any] | None, err: ToruError | None) -> None: ...

    def relayed(self, msg: dict[str, Any], raw: bytes) -> None: ...


class PluginConnection(FramedProtocol):
    """Client side of protocol v1 over one Unix-socket connection to one plugin."""

    def __init__(
        self,
        plugin_id: str,
        max_frame: int,
        on_lost: Callable[[str], None] | None = None,
        on_timeout: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(max_frame, parse=False)  # on_message parses, keeping the raw bytes
        self.plugin_id = plugin_id
        self.on_lost = on_lost
        self.on_timeout = on_timeout
        # rid -> (callback, deadline on the loop clock, raw-reply callback of a relay or None).
        # PERF: one timer per connection, armed for the earliest deadline, instead of a
        # call_later + cancel per request.
        self.pending: dict[str, tuple[ReplyCallback, float, RawReplyCallback | None]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # rid -> deadline of requests that timed out (504 sent) and are still unanswered.
        self.owed: dict[str, float] = {}
        self.last_reply = -math.inf  # loop time of the last answer, late ones included
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

    def on_message(self, raw: bytes) -> None:  # type: ignore[override]
        """One reply frame: parse, match by ``request_id``, hand it to whoever waits.

        A frame that is not a JSON object raises ``ProtocolError``: the base class then
        fails the connection (502 for everything pending), after the frames before it.
        """
        msg = loads(raw)
        if type(msg) is not dict:
            raise ProtocolError("frame is valid JSON but not a JSON object")
        rid = msg.get("request_id")
        if type(rid) is not str:
            if type(rid) is not int:
                return  # no (usable) request_id: an unsolicited message
            rid = str(rid)  # readers accept an integer as its decimal string
        entry = self.pending.pop(rid, None)
        if entry is None:
            if self.owed.pop(rid, None) is not None:
                self.last_reply = self._loop.time()  # late, but the plugin is making progress
            return  # a late answer to a timed-out request, or an unsolicited message
        self.last_reply = self._loop.time()
        relayed = entry[2]
        if relayed is not None:
            relayed(msg, raw)
            return
        payload = msg.get("payload")
        if type(payload) is not dict:
            entry[0](None, BadGateway(f"plugin {self.plugin_id} sent a reply without a payload"))
            return
        entry[0](payload, None)

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
        self._add(rid, callback, timeout, None)
        self.queue_frame(frame)
        return rid

    def relay_http(self, args: dict[str, Any], timeout: float, target: RelayTarget) -> None:
        """Send ``args`` as an http request (``payload.payload``); answer through ``target``.

        Exactly one of ``target.relayed(msg, raw)`` or ``target(None, error)`` follows.
        PERF: the envelope is concatenated around ``dumps(args)`` (no envelope dicts).
        """
        if self.closed:
            target(None, BadGateway(f"plugin {self.plugin_id} is not connected"))
            return
        self._seq += 1
        seq = self._seq
        body = dumps(args)
        head = b'{"type":"http","timestamp":"%s","request_id":"%d","payload":{"payload":' % (
            fast_timestamp_bytes(),
            seq,
        )
        size = len(head) + len(body) + 2
        if size > self.max_frame:
            target(
                None,
                BadGateway(
                    f"request too large for plugin {self.plugin_id}: a {size}-byte frame"
                    f" (limit {self.max_frame} bytes)"
                ),
            )
            return
        self._add(str(seq), target, timeout, target.relayed)
        self.queue_frame(HEADER.pack(size) + head, body, b"}}")

    def _add(
        self, rid: str, callback: ReplyCallback, timeout: float, relayed: RawReplyCallback | None
    ) -> None:
        deadline = self._loop.time() + timeout
        self.pending[rid] = (callback, deadline, relayed)
        if deadline < self._timer_at:
            self._arm(deadline)

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
        expired = [rid for rid, entry in self.pending.items() if entry[1] <= now]
        for rid in expired:
            entry = self.pending.pop(rid, None)
            if entry is None:
                continue
            if len(self.owed) < MAX_OWED:
                self.owed[rid] = entry[1]
            entry[0](None, GatewayTimeout(f"plugin {self.plugin_id} did not answer in time"))
            if self.on_timeout is not None:
                self.on_timeout(rid)
        if self.pending and not self.closed:
            self._arm(min(entry[1] for entry in self.pending.values()))

    # ------------------------------------------------------------------ progress

    def stalled_for(self, exclude: str = "") -> float | None:
        """None when nothing is owed (idle); else the seconds since the oldest deadline passed
        or the last answer came, whichever is later (0 while within every deadline).

        ``exclude`` is a request id that does not make the plugin busy (the idle probe).
        """
        oldest = min((e[1] for r, e in self.pending.items() if r != exclude), default=math.inf)
        if self.owed:
            oldest = min(oldest, min(self.owed.values()))
        if oldest == math.inf:
            return None
        return max(0.0, self._loop.time() - max(oldest, self.last_reply))

    def forget_owed(self) -> None:
        """The plugin answered a probe: what it still owes from before is not a hang."""
        self.owed.clear()

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
        for entry in pending.values():
            entry[0](None, err)
        if self.on_lost is not None:
            self.on_lost(reason)

    def close(self, reason: str = "closed by the supervisor") -> None:
        """Close and fail whatever is pending with 502 (idempotent)."""
        if not self.closed:
            if self.transport is not None and self._out:
                self._flush()  # let a queued shutdown message out first
            self.on_lost = None  # intentional: the owner knows
            self._fail(reason, abort=False)
