"""The control client: blocking, one per thread, bounded in time.

The CLI, the tests and (until the event-loop web tier replaces it there) gunicorn's sync
workers call the supervisor through this. It is a thin layer on the SDK's blocking channel
(``toru_plugin_api.blocking.Channel``: the one codec, ids matched by the shared
``Pending``, deadlines as kernel socket timeouts, so a call is one ``sendall`` and one
``recv``). A dead supervisor shows up as ``SupervisorUnavailable`` (503) quickly: connecting
to a missing or refused socket fails at once, and a broken connection is re-opened once
before giving up (a send that fails with EPIPE never reached the old supervisor, so retrying
it cannot duplicate a request). After a timeout the connection is dropped, so a late reply
is never read as the next call's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toru.errors import BadGateway, SupervisorUnavailable, ToruError
from toru_plugin_api.blocking import Channel, connect_unix, kernel_timeout
from toru_plugin_api.codec import (
    DEFAULT_MAX_FRAME,
    ProtocolError,
    binary_head,
    dumps,
    encode,
    frame_body,
)
from toru_plugin_api.messages import validate_http_reply

__all__ = [
    "ClientSettings",
    "ControlClient",
    "ProxyResponse",
    "http_frame",
    "http_result",
    "kernel_timeout",
    "reply_result",
    "restart_timeout",
]

_local = threading.local()


def restart_timeout(config: Any) -> float:
    """How long a caller waits for the control op ``restart`` (the API and the CLI): the new
    process's ``--metadata``, its start and its first health probe, plus a margin."""
    return float(config.metadata_timeout + config.start_timeout + config.health_timeout + 5.0)


@dataclass
class ProxyResponse:
    """A plugin's answer to a proxied request."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


def reply_result(msg: dict[str, Any]) -> Any:
    """The ``result`` of a control reply, or raises the ``ToruError`` it carries.

    An ``http`` reply asked for with ``"reply": "message"`` carries the plugin's whole reply
    message instead of ``result``; its result is that message's ``payload``.
    """
    if msg.get("ok"):
        relayed = msg.get("message")
        if relayed is not None:
            return relayed.get("payload") if type(relayed) is dict else None
        return msg.get("result")
    err = msg.get("error")
    raise ToruError.from_dict(err if isinstance(err, dict) else {"message": str(err)})


class ClientSettings:
    """What both control clients are configured with: this module's blocking one and the
    worker's asyncio one (toru/wsgi/control.py)."""

    def __init__(
        self,
        socket_path: str | Path,
        *,
        connect_timeout: float = 2.0,
        timeout: float = 10.0,
        http_timeout: float = 35.0,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self.path = str(socket_path)
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.http_timeout = http_timeout
        self.max_frame = max_frame


class ControlClient(ClientSettings):
    """Blocking client of docs/control-protocol.md. Not thread-safe: use ``for_thread``."""

    _channel: Channel | None = None

    @classmethod
    def for_thread(cls, socket_path: str | Path, **kwargs: Any) -> ControlClient:
        """This thread's client for ``socket_path`` (created on first use, then reused)."""
        clients = getattr(_local, "clients", None)
        if clients is None:
            clients = _local.clients = {}
        key = str(socket_path)
        client = clients.get(key)
        if client is None:
            client = clients[key] = cls(socket_path, **kwargs)
        return client

    def _connect(self, timeout: float) -> Channel:
        try:
            sock = connect_unix(self.path, min(self.connect_timeout, timeout))
        except OSError as exc:
            raise SupervisorUnavailable(
                f"the supervisor is not reachable at {self.path}: {exc.strerror or exc}"
            ) from None
        self._channel = Channel(sock, id_field="id", max_frame=self.max_frame)
        return self._channel

    def close(self) -> None:
        """Drop the connection (idempotent); the next call reconnects."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _unavailable(self, why: str) -> SupervisorUnavailable:
        self.close()
        return SupervisorUnavailable(why)

    def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one operation; its ``result``, or raises the ``ToruError`` it failed with."""
        t = self.timeout if timeout is None else timeout
        return reply_result(
            self._exchange(lambda rid: control_frame(rid, op, args, self.max_frame), t)
        )

    def _exchange(self, frame_for: Callable[[str], bytes], timeout: float) -> dict[str, Any]:
        """Send the frame ``frame_for(rid)`` makes, return the whole reply message to it."""
        for attempt in (0, 1):
            channel = self._channel or self._connect(timeout)
            rid = channel.next_id()
            frame = frame_for(rid)
            channel.expect(rid)
            try:
                channel.send_bytes(frame, timeout)
                break
            except TimeoutError:
                raise self._unavailable("timed out sending to the supervisor") from None
            except OSError as exc:
                self.close()
                if attempt:
                    raise SupervisorUnavailable(f"lost the supervisor: {exc}") from None
        try:
            return channel.reply(rid, timeout)
        except TimeoutError:
            raise self._unavailable("the supervisor did not answer in time") from None
        except EOFError:
            raise self._unavailable("the supervisor closed the connection") from None
        except ProtocolError as exc:
            raise self._unavailable(f"bad reply from the supervisor: {exc}") from None
        except OSError as exc:
            raise self._unavailable(f"lost the supervisor: {exc}") from None

    def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | list[bytes] | None = b"",
        timeout: float | None = None,
    ) -> ProxyResponse:
        """Proxy one request to the plugin serving ``route`` (``path`` below it, query kept)."""
        t = self.http_timeout if timeout is None else timeout
        parts = (route, method, path, headers, body, self.max_frame)
        return http_result(self._exchange(lambda rid: b"".join(http_frame(rid, *parts)), t))


def control_frame(rid: str, op: str, args: dict[str, Any] | None, max_frame: int) -> bytes:
    """Any operation but ``http`` as one frame (both clients; ``http`` is ``http_frame``)."""
    return encode({"v": 1, "id": rid, "op": op, "args": args or {}}, max_frame)


def http_frame(
    rid: str,
    route: str,
    method: str,
    path: str,
    headers: dict[str, str] | None,
    body: bytes | str | list[bytes] | None,
    max_frame: int = DEFAULT_MAX_FRAME,
) -> tuple[bytes | memoryview, ...]:
    """The ``http`` op as the parts of one binary frame, for both control clients (this
    module's blocking one and the worker's asyncio one, toru/wsgi/control.py).

    The frame's tail is the plugin request's JSON (``method``, ``path``, ``headers``; its
    size is ``args.request_json``) and then the body: the supervisor relays both as they
    come, without parsing or re-encoding them (docs/control-protocol.md). ``body`` may be
    the list of chunks it was received in (``read_body_parts``): a big body's chunks are
    parts of their own, never joined. Raises ``FrameTooLarge`` when it does not fit in
    ``max_frame``.
    """
    request = dumps({"method": method, "path": path, "headers": headers or {}})
    if body is None:
        chunks: list[bytes] | tuple[bytes | memoryview, ...] = (b"",)
    elif type(body) is str:
        chunks = (body.encode("utf-8", "surrogatepass"),)
    elif type(body) is list:
        chunks = body
    else:
        chunks = (body,)  # type: ignore[assignment]
    head = (
        b'{"v":1,"id":"%s","op":"http","reply":"message","args":{"route":%s,"request_json":%d}}'
        % (
            rid.encode(),
            dumps(route),
            len(request),
        )
    )
    body_size = len(chunks[0]) if len(chunks) == 1 else sum(map(len, chunks))
    return (binary_head(head, len(request) + body_size, max_frame), request, *chunks)


def http_result(msg: dict[str, Any]) -> ProxyResponse:
    """A control reply to ``http`` as a ``ProxyResponse``: the plugin's reply checked with
    ``validate_http_reply`` (502 naming the problem), or raises the ``ToruError`` it carries."""
    try:
        reply = validate_http_reply(reply_result(msg), frame_body(msg))
    except ProtocolError as exc:
        raise BadGateway(str(exc)) from None
    return ProxyResponse(reply.status, reply.headers, reply.body_bytes)
