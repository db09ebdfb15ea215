"""The one persistent connection from the supervisor to a plugin (asyncio Protocol).

Requests are pipelined and matched by ``request_id`` (original plugins answer in order on a
single connection, SDK plugins may answer out of order: both work). Each request has a
deadline: on expiry its caller gets 504 at once and a late answer is dropped. When the
connection breaks or the plugin sends something that is not a valid frame (including a
length prefix above the maximum frame size, checked before any payload is buffered), every
pending request gets 502 at once.

PERF: this is the hot path of every proxied request. Replies are delivered by plain
callbacks (no Future or Task per request) and outgoing frames are corked: everything queued
during one loop iteration goes out in one ``transport.write``. A relayed request
(``relay_http``) is written by concatenation around ``dumps(args)``, and its reply is handed
to the target with its raw bytes, so the control reply can embed them instead of
re-encoding the parsed message (every frame is still parsed and validated here).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from toru.errors import BadGateway, GatewayTimeout, ToruError
from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.codec import HEADER, ProtocolError, dumps, encode, loads
from toru_plugin_api.messages import make_message, now_iso_bytes

ReplyCallback = Callable[[dict[str, Any] | None, ToruError | None], None]
RawReplyCallback = Callable[[dict[str, Any], bytes], None]
CLEAN_EOF = "connection closed by the plugin"


class RelayTarget(Protocol):
    """Who gets the answer of ``relay_http``: the parsed reply with its raw frame, or an error.

    ``__call__(None, err)`` is the timeout (504) or connection failure (502) path, shared
    with ordinary ``ReplyCallback``s; ``relayed(msg, raw)`` gets the whole reply message
    (already parsed, its payload not yet checked) and the exact JSON bytes it came from.
    """

    def __call__(self, reply: dict[str, Any] | None, err: ToruError | None) -> None: ...

    def relayed(self, msg: dict[str, Any], raw: bytes) -> None: ...


class PluginConnection(FramedProtocol):
    """Client side of protocol v1 over one Unix-socket connection to one plugin.

    The pending requests, their one deadline timer and the failing of everything pending on
    loss are the base's (``toru_plugin_api.aio``); this adds the envelopes, the relay form
    and the mapping to Toru's errors (504 on expiry, 502 on loss).
    """

    eof_reason = CLEAN_EOF  # supervised.py reconnects a plugin that closed cleanly

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

    # ------------------------------------------------------------------ base hooks

    def timeout_error(self, rid: str) -> ToruError:
        return GatewayTimeout(f"plugin {self.plugin_id} did not answer in time")

    def lost_error(self, reason: str) -> ToruError:
        if not reason:
            return BadGateway(f"plugin {self.plugin_id} is not connected")
        return BadGateway(f"plugin {self.plugin_id}: {reason}")

    def on_expired(self, rid: str, deadline: float) -> None:
        if self.on_timeout is not None:
            self.on_timeout(rid)

    def on_closed(self, reason: str) -> None:
        if self.on_lost is not None:
            self.on_lost(reason)

    # ------------------------------------------------------------------ requests

    def on_message(self, raw: bytes) -> None:  # type: ignore[override]
        """One reply frame: parse, match by ``request_id``, hand it to whoever waits.

        A frame that is not a JSON object raises ``ProtocolError``: the base class then
        fails the connection (502 for everything pending), after the frames before it.
        """
        msg = loads(raw)
        if type(msg) is not dict:
            raise ProtocolError("frame is valid JSON but not a JSON object")
        entry = self.pending.take(msg.get("request_id"))
        if entry is None:
            return  # a late answer to a timed-out request, or an unsolicited message
        relayed = entry[2]
        if relayed is not None:
            relayed(msg, raw)
            return
        payload = msg.get("payload")
        if type(payload) is not dict:
            entry[0](None, BadGateway(f"plugin {self.plugin_id} sent a reply without a payload"))
            return
        entry[0](payload, None)

    def request(  # type: ignore[override]
        self, type_: str, payload: dict[str, Any], timeout: float, callback: ReplyCallback
    ) -> str:
        """Send a request; ``callback(payload, None)`` or ``callback(None, error)`` exactly once.

        NOTE: the callback form of the base's ``request`` (no Future per request): the
        supervisor's probes and lifecycle calls take the reply's payload, not the message.
        """
        if self.closed:
            callback(None, self.lost_error(""))
            return ""
        rid = self.next_id()
        try:
            frame = encode(make_message(type_, payload, rid), self.max_frame)
        except ProtocolError as exc:
            callback(None, BadGateway(f"request too large for plugin {self.plugin_id}: {exc}"))
            return ""
        self.expect(rid, timeout, callback)
        self.queue_frame(frame)
        return rid

    def relay_http(self, args: dict[str, Any], timeout: float, target: RelayTarget) -> None:
        """Send ``args`` as an http request (``payload.payload``); answer through ``target``.

        Exactly one of ``target.relayed(msg, raw)`` or ``target(None, error)`` follows.
        PERF: the envelope is concatenated around ``dumps(args)`` (no envelope dicts).
        """
        if self.closed:
            target(None, self.lost_error(""))
            return
        rid = self.next_id()
        body = dumps(args)
        head = b'{"type":"http","timestamp":"%s","request_id":"%s","payload":{"payload":' % (
            now_iso_bytes(),
            rid.encode(),
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
        self.expect(rid, timeout, target, target.relayed)
        self.queue_frame(HEADER.pack(size) + head, body, b"}}")

    def close(self, reason: str = "closed by the supervisor") -> None:
        """Close and fail whatever is pending with 502 (idempotent); ``on_lost`` is not
        called (the owner closing it knows)."""
        if not self.closed:
            self.on_lost = None
            super().close(reason)
