"""The worker's asyncio client of the supervisor's control socket (docs/control-protocol.md).

One ``ControlClient`` per worker process, one connection: every request of every coroutine
in the worker is multiplexed over it, pipelined, its reply matched by ``id``. Deadlines share
one timer armed for the earliest: ``ControlConnection`` subclasses the one asyncio base,
``toru_plugin_api.aio.FramedProtocol``, as the supervisor's plugin connection does. When the connection drops, every pending request fails at once with 503; the next
request reconnects. A supervisor that is down is retried with a growing backoff
(``RECONNECT_BACKOFF``): meanwhile requests fail fast with 503 and ``Retry-After`` instead of
each paying a connect attempt.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any, Protocol

from toru.errors import PayloadTooLarge, SupervisorUnavailable, ToruError
from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.codec import ProtocolError

from ..supervisor.client import (
    ClientSettings,
    ProxyResponse,
    control_frame,
    http_frame,
    http_result,
    reply_result,
)

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
        body: bytes | str | list[bytes] | None = b"",
        timeout: float | None = None,
    ) -> ProxyResponse: ...


class ControlConnection(FramedProtocol):
    """One framed connection to the supervisor; requests pending by ``id``.

    The pending table, the one deadline timer and failing everything pending on loss are the
    asyncio base's (``toru_plugin_api.aio``); this maps them to 503 (``SupervisorUnavailable``).
    """

    id_field = "id"

    def timeout_error(self, rid: str) -> ToruError:
        return SupervisorUnavailable("the supervisor did not answer in time")

    def lost_error(self, reason: str) -> ToruError:
        return SupervisorUnavailable(reason or "lost the supervisor")

    def on_protocol_error(self, exc: ProtocolError) -> None:
        self.fail_connection(f"bad reply from the supervisor: {exc}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail_connection(
            f"lost the supervisor: {exc}" if exc else "the supervisor closed the connection"
        )


def _request(
    conn: ControlConnection, frame_for: Callable[[str], tuple[Any, ...]], timeout: float
) -> asyncio.Future[Any]:
    """Send the frame ``frame_for(rid)`` builds for a fresh id; the Future of its reply.
    A request too big for a frame is 413."""
    rid = conn.next_id()
    try:
        parts = frame_for(rid)
    except ProtocolError as exc:
        raise PayloadTooLarge(str(exc)) from None
    return conn.request_frame(rid, parts, timeout)


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Mark a connect's failure as seen even if every request that waited was cancelled."""
    if not task.cancelled():
        task.exception()


class ControlClient(ClientSettings):
    """``call(op, args, timeout)`` and ``http(...)`` for one worker process (one event loop)."""

    _conn: ControlConnection | None = None
    _connecting: asyncio.Task[ControlConnection] | None = None
    _failures = 0
    _retry_at = 0.0

    async def _connection(self) -> ControlConnection:
        conn = self._conn
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting
        if task is None:
            loop = asyncio.get_running_loop()
            wait = self._retry_at - loop.time()
            if wait > 0:
                raise SupervisorUnavailable(
                    "the supervisor is not reachable (retrying)",
                    retry_after=max(1, math.ceil(wait)),
                )
            # NOTE: a task of its own, shared by every request that needs the connection
            # meanwhile: a request that is cancelled (its client went away) cancels only
            # its own wait, never the connect the others wait for.
            task = self._connecting = loop.create_task(self._connect())
            task.add_done_callback(_retrieved)
        return await asyncio.shield(task)

    async def _connect(self) -> ControlConnection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_unix_connection(lambda: ControlConnection(self.max_frame), self.path),
                self.connect_timeout,
            )
        except OSError as exc:  # TimeoutError (the connect took too long) is one too
            delay = RECONNECT_BACKOFF[min(self._failures, len(RECONNECT_BACKOFF) - 1)]
            self._failures += 1
            self._retry_at = loop.time() + delay
            raise SupervisorUnavailable(
                f"the supervisor is not reachable at {self.path}: {exc or 'timed out'}",
                retry_after=max(1, math.ceil(delay)),
            ) from None
        finally:
            self._connecting = None
        self._failures = 0
        self._conn = conn
        return conn

    def close(self) -> None:
        """Drop the connection, failing what is pending (idempotent); the next call reconnects."""
        if self._conn is not None:
            self._conn.fail_connection("closed by the worker")
            self._conn = None

    async def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one operation: its ``result``, or raises the ``ToruError`` it failed with."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        t = self.timeout if timeout is None else timeout
        return reply_result(
            await _request(conn, lambda rid: (control_frame(rid, op, args, self.max_frame),), t)
        )

    async def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict[str, str] | None = None,
        body: bytes | str | list[bytes] | None = b"",
        timeout: float | None = None,
    ) -> ProxyResponse:
        """Proxy one request to the plugin serving ``route`` (``path`` below it, query kept)."""
        conn = self._conn
        if conn is None or conn.closed:  # PERF: no coroutine call while connected
            conn = await self._connection()
        t = self.http_timeout if timeout is None else timeout
        return http_result(
            await _request(
                conn,
                lambda rid: http_frame(rid, route, method, path, headers, body, self.max_frame),
                t,
            )
        )
