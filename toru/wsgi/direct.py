"""The direct channel: a worker sends a plugin-route request straight to the plugin's socket.

For plugins that declared ``multi_connection`` (every SDK plugin does), a proxied request
costs one process hand-off instead of three: worker -> plugin -> worker, not worker ->
supervisor -> plugin -> supervisor -> worker. Measured on the asgi worker against the
pipelined supervisor path (docs/operations.md, "Direct channel"); kept because it wins.
The supervisor stays the owner of plugin state:

- A worker sends direct only to routes the worker's route table (toru/wsgi/routes.py, a
  copy of the supervisor's, followed through ``run/routes.gen``) gives a socket for. Every
  other route (unknown, stopped, starting, backing off, being disabled, or a plugin with one
  connection) takes the supervisor path, which answers 404 and 503 as before.
- A request goes direct only if it can be handed over: when the connection cannot be opened
  (the plugin just died or restarted), nothing reached the plugin, so the request takes the
  supervisor path instead; it is never delivered twice.
- Once sent, the outcome is final, as on the supervisor path: no reply within
  ``http_timeout`` is 504 (the plugin keeps running, the late reply is dropped), a lost
  connection or a bad reply 502 (503 if the supervisor is gone too, as on its path).
- Latencies and timeouts go to the supervisor about once a second (control op ``report``),
  so the UI's per-plugin stats and the event log still see every request.

One ``DirectChannel`` per worker process: one ``PluginConnection`` (the supervisor's own
asyncio client of protocol v1: pipelined, matched by ``request_id``, one timer for the
earliest deadline) per plugin, multiplexing every request of the worker.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from toru.errors import BadGateway, GatewayTimeout, SupervisorUnavailable, ToruError
from toru_plugin_api.messages import HttpRequest, http_request_message

from ..supervisor.client import ProxyResponse, proxy_response
from ..supervisor.connection import PluginConnection
from .control import Control
from .routes import Route, RouteTable

CONNECT_TIMEOUT = 1.0  # a plugin's full listen backlog: then the supervisor path
REPORT_TIMEOUT = 2.0
REPORT_EVERY = 1.0


class Reporter:
    """Collects what the worker measured on direct connections; sends it once a second.

    The sending task runs only while there is something to send, and ``close`` sends the
    rest (the ASGI lifespan shutdown calls it), so a worker that is restarted or stopped
    gracefully loses no samples.
    """

    def __init__(self, control: Control) -> None:
        self.control = control
        self._latencies: dict[str, list[float]] = {}
        self._timeouts: dict[str, int] = {}
        self._warnings: dict[str, dict[str, int]] = {}
        self._task: asyncio.Task[None] | None = None

    def latency(self, plugin_id: str, seconds: float) -> None:
        samples = self._latencies.get(plugin_id)
        if samples is None:
            samples = self._latencies[plugin_id] = []
        samples.append(seconds)
        self._schedule()

    def timeout(self, plugin_id: str) -> None:
        self._timeouts[plugin_id] = self._timeouts.get(plugin_id, 0) + 1
        self._schedule()

    def warning(self, plugin_id: str, message: str) -> None:
        """Something a plugin did that the worker refused (toru/wsgi/headers.py): counted
        per message, written to the plugin's log by the supervisor, once per report."""
        seen = self._warnings.setdefault(plugin_id, {})
        seen[message] = seen.get(message, 0) + 1
        self._schedule()

    def _schedule(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._latencies or self._timeouts or self._warnings:
            await asyncio.sleep(REPORT_EVERY)
            await self.flush()

    async def flush(self) -> None:
        """Send what was collected (one ``report`` call); a failure drops it, never raises."""
        latencies, self._latencies = self._latencies, {}
        timeouts, self._timeouts = self._timeouts, {}
        warnings, self._warnings = self._warnings, {}
        if not latencies and not timeouts and not warnings:
            return
        plugins: dict[str, dict[str, Any]] = {}
        for plugin_id, samples in latencies.items():
            plugins[plugin_id] = {"latencies": [round(s, 6) for s in samples]}
        for plugin_id, count in timeouts.items():
            plugins.setdefault(plugin_id, {})["timeouts"] = count
        for plugin_id, counts in warnings.items():
            plugins.setdefault(plugin_id, {})["warnings"] = counts
        try:
            await self.control.call("report", {"plugins": plugins}, REPORT_TIMEOUT)
        except (ToruError, OSError):
            pass  # the supervisor is restarting: these stats are gone, requests are not

    async def close(self) -> None:
        """Stop the sending task and send the rest (idempotent)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        await self.flush()


class DirectChannel:
    """This worker's connections to multi-connection plugins (see the module docstring)."""

    def __init__(
        self, control: Control, routes: RouteTable, http_timeout: float, max_frame: int
    ) -> None:
        self.control = control
        self.routes = routes
        self.http_timeout = http_timeout
        self.max_frame = max_frame
        self.reporter = Reporter(control)
        self._conns: dict[str, tuple[PluginConnection, int]] = {}
        self._connecting: dict[str, asyncio.Task[PluginConnection | None]] = {}

    # ------------------------------------------------------------------ connections

    async def _connection(self, entry: Route) -> PluginConnection | None:
        held = self._conns.get(entry.plugin)
        if held is not None:
            conn, pid = held
            if not conn.closed and pid == entry.pid:
                return conn
            self._drop(entry.plugin)
        task = self._connecting.get(entry.plugin)
        if task is None:  # one connect per plugin, shared by the requests that wait for it
            task = asyncio.get_running_loop().create_task(self._connect(entry))
            self._connecting[entry.plugin] = task
            task.add_done_callback(lambda _: self._connecting.pop(entry.plugin, None))
        return await asyncio.shield(task)

    async def _connect(self, entry: Route) -> PluginConnection | None:
        plugin_id = entry.plugin
        loop = asyncio.get_running_loop()

        def lost(reason: str) -> None:
            held = self._conns.get(plugin_id)
            if held is not None and held[0] is conn:
                del self._conns[plugin_id]
            self.routes.invalidate()

        conn = PluginConnection(
            plugin_id,
            self.max_frame,
            on_lost=lost,
            on_timeout=lambda rid: self.reporter.timeout(plugin_id),
        )
        try:
            await asyncio.wait_for(
                loop.create_unix_connection(lambda: conn, entry.socket), CONNECT_TIMEOUT
            )
        except OSError:  # TimeoutError is one too: the supervisor path takes the request
            self.routes.invalidate()
            return None
        self._conns[plugin_id] = (conn, entry.pid)
        return conn

    def _drop(self, plugin_id: str) -> None:
        held = self._conns.pop(plugin_id, None)
        if held is not None:
            held[0].close("closed by the worker")

    async def close(self) -> None:
        """Close every plugin connection and send the last samples (idempotent)."""
        for plugin_id in list(self._conns):
            self._drop(plugin_id)
        await self.reporter.close()

    # ------------------------------------------------------------------ requests

    async def http(
        self,
        entry: Route,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> ProxyResponse | None:
        """The plugin's answer, or None when the request must take the supervisor path.

        Raises ``GatewayTimeout`` (504) or ``BadGateway`` (502) once the request was sent.
        """
        conn = await self._connection(entry)
        if conn is None or conn.closed:
            return None
        plugin_id = entry.plugin
        payload = http_request_message("", HttpRequest(method, path, headers, body))["payload"]
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def done(reply: dict[str, Any] | None, err: ToruError | None) -> None:
            if not fut.done():
                if err is not None:
                    fut.set_exception(err)
                else:
                    fut.set_result(reply or {})

        t0 = time.perf_counter()
        conn.request("http", payload, self.http_timeout, done)
        try:
            reply = await fut
        except GatewayTimeout:
            raise  # counted by the connection's on_timeout
        except BadGateway:
            if conn.closed:
                await self._check_supervisor()
            raise
        self.reporter.latency(plugin_id, time.perf_counter() - t0)
        return proxy_response(reply)  # the supervisor path's checks (validate_http_reply)

    async def _check_supervisor(self) -> None:
        """Raise 503 if the plugin went away because the supervisor did (its plugins die with
        it): the same answer the supervisor path gives while the supervisor is restarting."""
        try:
            await self.control.call("ping", {}, REPORT_TIMEOUT)
        except SupervisorUnavailable:
            raise
        except (ToruError, OSError):
            pass
