"""The worker's asyncio client of the supervisor's control socket (docs/control-protocol.md).

One ``ControlClient`` per worker process, one connection: every request of every coroutine
in the worker is multiplexed over it, pipelined, its reply matched by ``id``. Deadlines share
one timer armed for the earliest (``ControlConnection``, as the supervisor's plugin connection
does). When the connection drops, every pending request fails at once with 503; the next
request reconnects. A supervisor that is down is retried with a growing backoff
(``RECONNECT_BACKOFF``): meanwhile requests fail fast with 503 and ``Retry-After`` instead of
each paying a connect attempt.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any, Protocol

from toru.errors import SupervisorUnavailable, ToruError
from toru_plugin_api.codec import DEFAULT_MAX_FRAME, ProtocolError, dumps, encode_payload
from toru_plugin_api.messages import decode_body, encode_body

from ..supervisor.client import ProxyResponse, reply_result
from ..supervisor.framed import FramedProtocol

__all__ = ["Control", "ControlClient", "ControlConnection", "ProxyResponse", "RECONNECT_BACKOFF"]

RECONNECT_BACKOFF = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0)  # seconds between connect attempts


class Control(Protocol):
    """What the resources need of the supervisor (``ControlClient``; fakes in unit tests)."""

    async def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any: ...

    async def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = b"",
        timeout: float | None = None,
    ) -> ProxyResponse: ...


class ControlConnection(FramedProtocol):
    """One framed connection to the supervisor with requests pending by id.

    ``request`` returns a Future of the whole reply message; a deadline passing fails it
    with 503 (the late reply is dropped), a lost connection fails every pending one at once.
    """

    def __init__(self, max_frame: int) -> None:
        super().__init__(max_frame)
        self.pending: dict[int, tuple[asyncio.Future[dict[str, Any]], float]] = {}
        self.closed = False
        self._seq = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    # ------------------------------------------------------------------ asyncio side

    def on_message(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        entry = self.pending.pop(rid, None) if type(rid) is int else None
        if entry is not None and not entry[0].done():
            entry[0].set_result(msg)

    def on_protocol_error(self, exc: ProtocolError) -> None:
        self.fail(f"bad reply from the supervisor: {exc}")

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(f"lost the supervisor: {exc}" if exc else "the supervisor closed the connection")

    # ------------------------------------------------------------------ requests

    def request(
        self, op: str, args: dict[str, Any], timeout: float
    ) -> asyncio.Future[dict[str, Any]]:
        """Queue one request; its Future gets the reply message or a ``ToruError``."""
        fut: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        if self.closed:
            fut.set_exception(SupervisorUnavailable("lost the supervisor"))
            return fut
        self._seq += 1
        rid = self._seq
        request: dict[str, Any] = {"v": 1, "id": rid, "op": op, "args": args}
        if op == "http":
            request["reply"] = "message"  # the relayed form (docs/control-protocol.md)
        try:
            frame = encode_payload(dumps(request), self.max_frame)
        except ProtocolError as exc:
            fut.set_exception(ToruError(str(exc), code="payload_too_large", status=413))
            return fut
        deadline = self._loop.time() + timeout
        self.pending[rid] = (fut, deadline)
        if deadline < self._timer_at:
            self._arm(deadline)
        self.queue_frame(frame)
        return fut

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._sweep)
        self._timer_at = deadline

    def _sweep(self) -> None:
        """Fail every request past its deadline (503), re-arm for the next one."""
        self._timer, self._timer_at = None, math.inf
        now = self._loop.time() + 0.001  # timers may fire a hair early
        for rid in [rid for rid, entry in self.pending.items() if entry[1] <= now]:
            fut = self.pending.pop(rid)[0]
            if not fut.done():
                fut.set_exception(SupervisorUnavailable("the supervisor did not answer in time"))
        if self.pending and not self.closed:
            self._arm(min(entry[1] for entry in self.pending.values()))

    def fail(self, reason: str) -> None:
        """Close and fail everything pending with 503 at once (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self._out.clear()
        if self.transport is not None:
            self.transport.abort()
        if self._timer is not None:
            self._timer.cancel()
            self._timer, self._timer_at = None, math.inf
        pending, self.pending = self.pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(SupervisorUnavailable(reason))


class ControlClient:
    """``call(op, args, timeout)`` and ``http(...)`` for one worker process (one event loop)."""

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
        self._conn: ControlConnection | None = None
        self._connecting: asyncio.Future[ControlConnection] | None = None
        self._failures = 0
        self._retry_at = 0.0

    async def _connection(self) -> ControlConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        if self._connecting is not None:  # another coroutine is connecting: share it
            return await asyncio.shield(self._connecting)
        loop = asyncio.get_running_loop()
        wait = self._retry_at - loop.time()
        if wait > 0:
            raise SupervisorUnavailable(
                "the supervisor is not reachable (retrying)", retry_after=max(1, math.ceil(wait))
            )
        self._connecting = loop.create_future()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_unix_connection(lambda: ControlConnection(self.max_frame), self.path),
                self.connect_timeout,
            )
        except OSError as exc:  # TimeoutError (the connect took too long) is one too
            delay = RECONNECT_BACKOFF[min(self._failures, len(RECONNECT_BACKOFF) - 1)]
            self._failures += 1
            self._retry_at = loop.time() + delay
            err = SupervisorUnavailable(
                f"the supervisor is not reachable at {self.path}: {exc or 'timed out'}",
                retry_after=max(1, math.ceil(delay)),
            )
            self._connecting.set_exception(err)
            self._connecting.exception()  # retrieved: no "never retrieved" warning
            raise err from None
        else:
            self._failures = 0
            self._conn = conn
            self._connecting.set_result(conn)
            return conn
        finally:
            self._connecting = None

    def close(self) -> None:
        """Drop the connection, failing what is pending (idempotent); the next call reconnects."""
        if self._conn is not None:
            self._conn.fail("closed by the worker")
            self._conn = None

    async def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one operation: its ``result``, or raises the ``ToruError`` it failed with."""
        conn = await self._connection()
        fut = conn.request(op, args or {}, self.timeout if timeout is None else timeout)
        return reply_result(await fut)

    async def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | None = b"",
        timeout: float | None = None,
    ) -> ProxyResponse:
        """Proxy one request to the plugin serving ``route`` (``path`` below it, query kept)."""
        text, b64 = encode_body(body)
        args: dict[str, Any] = {
            "route": route,
            "method": method,
            "path": path,
            "headers": headers or {},
            "body": text,
        }
        if b64:
            args["body_encoding"] = "base64"
        result = await self.call("http", args, self.http_timeout if timeout is None else timeout)
        try:
            raw = decode_body(result, "plugin reply")
        except ProtocolError as exc:
            raise ToruError(str(exc), code="bad_gateway", status=502) from None
        headers_out = result.get("headers")
        return ProxyResponse(
            result.get("status", 502), headers_out if isinstance(headers_out, dict) else {}, raw
        )
