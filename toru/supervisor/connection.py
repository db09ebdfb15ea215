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
(``relay_http``) is written by concatenation around the request's JSON as the worker sent
it (``http_relay.request_parts``), and its reply is handed
to the target with its raw bytes, so the control reply can embed them instead of
re-encoding the parsed message (every frame is still parsed and validated here).

Bodies: to a plugin with the ``binary_bodies`` capability (``binary=True``) a relayed body
goes as the raw tail of a binary frame, and its binary reply's body is handed on as the
bytes it came as (never decoded, escaped or base64'd); a v1 plugin gets the body as a JSON
string as before (base64 when it is not UTF-8).

Progress, for the health rule (docs/ARCHITECTURE.md, "Health"): a request whose deadline
passed stays *owed* until its late answer arrives, and ``last_reply`` is when any answer
last came. ``stalled_for`` turns both into "seconds the plugin has answered nothing since it
went past a deadline", so a busy one-connection plugin is judged by progress, not by a probe
queued behind its work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from toru.errors import BadGateway, GatewayTimeout, ToruError
from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.codec import HEADER, ProtocolError, dumps, encode, loads
from toru_plugin_api.endpoint import reply_key
from toru_plugin_api.messages import encode_body, make_message, now_iso_bytes

ReplyCallback = Callable[[dict[str, Any] | None, ToruError | None], None]
RawReplyCallback = Callable[[dict[str, Any], bytes, bytes | None], None]
CLEAN_EOF = "connection closed by the plugin"
MAX_OWED = 4096  # timed-out requests remembered per connection (the oldest ones count)


class RelayTarget(Protocol):
    """Who gets the answer of ``relay_http``: the parsed reply with its raw frame, or an error.

    ``__call__(None, err)`` is the timeout (504) or connection failure (502) path, shared
    with ordinary ``ReplyCallback``s; ``relayed(msg, raw, body)`` gets the whole reply
    message (already parsed, its payload not yet checked), the exact JSON bytes it came
    from and, for a binary frame, its raw body (else None).
    """

    def __call__(self, reply: dict[str, Any] | None, err: ToruError | None) -> None: ...

    def relayed(self, msg: dict[str, Any], raw: bytes, body: bytes | None) -> None: ...


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
        binary: bool = False,
    ) -> None:
        super().__init__(max_frame, parse=False)  # on_message parses, keeping the raw bytes
        self.plugin_id = plugin_id
        self.binary = binary  # the plugin declared ``binary_bodies``: send it binary frames
        self.on_lost = on_lost
        self.on_timeout = on_timeout
        # rid -> deadline of requests that timed out (504 sent) and are still unanswered.
        self.owed: dict[str, float] = {}
        self.last_reply = -math.inf  # loop time of the last answer, late ones included

    # ------------------------------------------------------------------ base hooks

    def timeout_error(self, rid: str) -> ToruError:
        return GatewayTimeout(f"plugin {self.plugin_id} did not answer in time")

    def lost_error(self, reason: str) -> ToruError:
        if not reason:
            return BadGateway(f"plugin {self.plugin_id} is not connected")
        return BadGateway(f"plugin {self.plugin_id}: {reason}")

    def on_expired(self, rid: str, deadline: float) -> None:
        if len(self.owed) < MAX_OWED:
            self.owed[rid] = deadline
        if self.on_timeout is not None:
            self.on_timeout(rid)

    def on_closed(self, reason: str) -> None:
        if self.on_lost is not None:
            self.on_lost(reason)

    # ------------------------------------------------------------------ requests

    def on_message(self, raw: bytes | tuple[bytes, bytes]) -> None:  # type: ignore[override]
        """One reply frame: parse, match by ``request_id``, hand it to whoever waits.

        A frame that is not a JSON object raises ``ProtocolError``: the base class then
        fails the connection (502 for everything pending), after the frames before it.
        A binary frame comes as ``(json, body)``; only relayed requests take its body.
        """
        body = None
        if type(raw) is tuple:
            raw, body = raw
        msg = loads(raw)
        if type(msg) is not dict:
            raise ProtocolError("frame is valid JSON but not a JSON object")
        rid = msg.get("request_id")
        entry = self.pending.take(rid)
        if entry is None:
            if self.owed and self.owed.pop(reply_key(rid), None) is not None:  # type: ignore[arg-type]
                self.last_reply = self._loop.time()  # late, but the plugin makes progress
            return  # a late answer to a timed-out request, or an unsolicited message
        self.last_reply = self._loop.time()
        relayed = entry[2]
        if relayed is not None:
            relayed(msg, raw, body)
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

    def relay_http(
        self,
        request: bytes,
        timeout: float,
        target: RelayTarget,
        body: bytes | memoryview | None = None,
    ) -> None:
        """Send ``request`` (the JSON object of ``payload.payload``) as an http request;
        answer through ``target``.

        ``body`` is the request's raw body (None when ``request`` carries it as JSON): the
        tail of a binary frame for a binary plugin, else spliced into ``request`` as a JSON
        string. Exactly one of ``target.relayed(msg, raw, body)`` or ``target(None, error)``
        follows. PERF: the envelope is concatenated around ``request``, which is neither
        parsed nor re-encoded here.
        """
        if self.closed:
            target(None, self.lost_error(""))
            return
        # The JSON after the envelope, in parts: a v1 plugin's body is spliced in as a JSON
        # string (PERF: a big one is not copied again into a joined request).
        parts: tuple[bytes, ...]
        if body is not None and not self.binary:
            text, b64 = encode_body(body)
            sep = b',"body":' if len(request) > 2 else b'"body":'  # ``{}`` has no member
            extra = b',"body_encoding":"base64"}}}' if b64 else b"}}}"
            parts = (request[:-1], sep, dumps(text), extra)
            body = None
        else:
            parts = (request, b"}}")
        rid = self.next_id()
        head = b'{"type":"http","timestamp":"%s","request_id":"%s","payload":{"payload":' % (
            now_iso_bytes(),
            rid.encode(),
        )
        json_size = len(head) + sum(map(len, parts))
        size = json_size + (0 if body is None else 4 + len(body))
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
        if body is not None:
            self.queue_binary(b"".join((head, *parts)), body)
        else:  # a big JSON body (a v1 plugin's) keeps its parts (``queue_frame``)
            self.queue_frame(HEADER.pack(size) + head, *parts)

    # ------------------------------------------------------------------ progress

    def stalled_for(self, exclude: str = "") -> float | None:
        """None when nothing is owed (idle); else the seconds since the oldest deadline passed
        or the last answer came, whichever is later (0 while within every deadline).

        ``exclude`` is a request id that does not make the plugin busy (the idle probe).
        """
        entries = self.pending.entries
        oldest = min((e[1] for r, e in entries.items() if r != exclude), default=math.inf)
        if self.owed:
            oldest = min(oldest, min(self.owed.values()))
        if oldest == math.inf:
            return None
        return max(0.0, self._loop.time() - max(oldest, self.last_reply))

    def forget_owed(self) -> None:
        """The plugin answered a probe: what it still owes from before is not a hang."""
        self.owed.clear()

    def close(self, reason: str = "closed by the supervisor") -> None:
        """Close and fail whatever is pending with 502 (idempotent); ``on_lost`` is not
        called (the owner closing it knows)."""
        if not self.closed:
            self.on_lost = None
            super().close(reason)
