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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toru.errors import BadGateway, SupervisorUnavailable, ToruError
from toru_plugin_api.blocking import Channel, connect_unix, kernel_timeout
from toru_plugin_api.codec import DEFAULT_MAX_FRAME, Body, ProtocolError, encode, frame_body
from toru_plugin_api.messages import validate_http_reply

__all__ = [
    "ControlClient",
    "ProxyResponse",
    "http_args",
    "proxy_response",
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


class ControlClient:
    """Blocking client of docs/control-protocol.md. Not thread-safe: use ``for_thread``."""

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
        self._channel: Channel | None = None

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
        return reply_result(self._request(op, args, timeout))

    def _request(
        self,
        op: str,
        args: dict[str, Any] | None,
        timeout: float | None,
        body: Body | None = None,
    ) -> dict[str, Any]:
        """The whole reply message to one operation (``body``: a binary frame's tail)."""
        timeout = self.timeout if timeout is None else timeout
        request: dict[str, Any] = {"v": 1, "id": "", "op": op, "args": args or {}}
        if op == "http":  # the relayed form (docs/control-protocol.md); older supervisors
            request["reply"] = "message"  # ignore the key and answer with "result"
        for attempt in (0, 1):
            channel = self._channel or self._connect(timeout)
            rid = request["id"] = channel.next_id()
            frame = encode(request, self.max_frame, body)
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
        args = http_args(route, method, path, headers)
        t = self.http_timeout if timeout is None else timeout
        msg = self._request("http", args, t, body_bytes(body))
        return proxy_response(reply_result(msg), frame_body(msg))


def body_bytes(body: bytes | str | list[bytes] | None) -> bytes | list[bytes]:
    """A request body as what the ``http`` op's binary frame carries: bytes, or the list of
    parts it was received in (``read_body_parts``: written on in order, never joined)."""
    if body is None:
        return b""
    return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body


def http_args(route: str, method: str, path: str, headers: dict[str, str] | None) -> dict[str, Any]:
    """The ``http`` op's args (docs/control-protocol.md); the body goes as the tail of the
    op's binary frame. Shared by the blocking client and the worker's asyncio one
    (toru/wsgi/control.py)."""
    return {"route": route, "method": method, "path": path, "headers": headers or {}}


def proxy_response(result: Any, body: bytes | None = None) -> ProxyResponse:
    """A plugin's reply payload checked (``validate_http_reply``) as a ``ProxyResponse``;
    ``body`` is the raw body of a binary reply. 502 naming the problem otherwise."""
    try:
        reply = validate_http_reply(result, body)
    except ProtocolError as exc:
        raise BadGateway(str(exc)) from None
    return ProxyResponse(reply.status, reply.headers, reply.body_bytes)
