"""The direct channel: a worker sends a plugin-route request straight to the plugin's socket.

For plugins that declared ``multi_connection`` (every SDK plugin does), a proxied request
costs one process hand-off instead of three: worker -> plugin -> worker, not worker ->
supervisor -> plugin -> supervisor -> worker (benchmarks/RESULTS.md, "Direct channel").
The supervisor stays the owner of plugin state:

- A worker uses only the routes of the supervisor's ``routes`` table, and checks it on every
  request against ``run/routes.gen`` (a counter the supervisor bumps on every state change).
  Every other route (unknown, stopped, starting, backing off, being disabled, or a plugin
  with one connection) takes the supervisor path, which answers 404 and 503 as before.
- A request goes direct only if it can be handed over. When connecting or sending fails
  (the plugin just died or restarted), nothing reached the plugin, so the request takes the
  supervisor path instead: it is never delivered twice.
- Once sent, the outcome is final, as on the supervisor path: no reply within
  ``http_timeout`` is 504 (the plugin keeps running), a lost connection or a bad reply 502.
- Latencies and timeouts go to the supervisor about once a second (control op ``report``),
  so the UI's per-plugin stats and the event log still see every request.

One ``DirectChannel`` per worker thread (not thread-safe, like ``ControlClient``), one
``Reporter`` per process.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toru.errors import BadGateway, GatewayTimeout, SupervisorUnavailable, ToruError
from toru_plugin_api.codec import FrameReader, ProtocolError, encode
from toru_plugin_api.messages import HttpRequest, decode_body, http_request_message

from ..supervisor.client import ControlClient, ProxyResponse, kernel_timeout
from ..supervisor.route_generation import SIZE, open_generation

CONNECT_TIMEOUT = 1.0  # a plugin's full listen backlog: then the supervisor path
ROUTES_TIMEOUT = 2.0
RETRY_AFTER = 1.0  # after a failed ``routes`` call or a missing counter file
REPORT_EVERY = 1.0


_all_reporters: weakref.WeakSet[Reporter] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for reporter in list(_all_reporters):
        reporter._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Reporter:
    """Collects what workers measured on direct connections and sends it once a second.

    A daemon thread of the worker process sends it on its own control connection, so no
    request waits for it. A worker that exits gracefully sends the rest (``flush_reports``);
    one that is killed loses its last second of samples.
    """

    def __init__(self, control_socket: str | Path, **client_kwargs: Any) -> None:
        self._path = str(control_socket)
        self._kwargs = client_kwargs
        self._lock = threading.Lock()
        self._latencies: dict[str, list[float]] = {}
        self._timeouts: dict[str, int] = {}
        self._started = False  # the report thread; PERF: a flag, not a getpid() per request
        _all_reporters.add(self)

    def latency(self, plugin_id: str, seconds: float) -> None:
        with self._lock:
            samples = self._latencies.get(plugin_id)
            if samples is None:
                samples = self._latencies[plugin_id] = []
            samples.append(seconds)
        if not self._started:
            self._start()

    def timeout(self, plugin_id: str) -> None:
        with self._lock:
            self._timeouts[plugin_id] = self._timeouts.get(plugin_id, 0) + 1
        if not self._started:
            self._start()

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._loop, name="toru-direct-report", daemon=True).start()

    def _after_fork_in_child(self) -> None:
        """Threads do not survive ``fork``: the child starts its own, with a fresh lock (the
        parent's thread may have held it) and without the parent's samples."""
        self._lock = threading.Lock()
        self._latencies, self._timeouts = {}, {}
        self._started = False

    def _loop(self) -> None:
        while True:
            time.sleep(REPORT_EVERY)
            self.flush()

    def flush(self) -> None:
        """Send what was collected (one ``report`` call); a failure drops it, never raises."""
        with self._lock:
            latencies, self._latencies = self._latencies, {}
            timeouts, self._timeouts = self._timeouts, {}
        if not latencies and not timeouts:
            return
        plugins: dict[str, dict[str, Any]] = {}
        for plugin_id, samples in latencies.items():
            plugins[plugin_id] = {"latencies": [round(s, 6) for s in samples]}
        for plugin_id, count in timeouts.items():
            plugins.setdefault(plugin_id, {})["timeouts"] = count
        try:
            ControlClient.for_thread(self._path, **self._kwargs).call(
                "report", {"plugins": plugins}, ROUTES_TIMEOUT
            )
        except (ToruError, OSError):
            pass  # the supervisor is restarting: these stats are gone, requests are not


class _PluginConnection:
    __slots__ = ("pid", "reader", "sock")

    def __init__(self, sock: socket.socket, reader: FrameReader, pid: int) -> None:
        self.sock = sock
        self.reader = reader
        self.pid = pid


class DirectChannel:
    """This thread's route table and connections to multi-connection plugins."""

    def __init__(
        self,
        control: Callable[[], Any],
        generation_file: Path,
        http_timeout: float,
        max_frame: int,
        reporter: Reporter,
    ) -> None:
        self.control = control
        self.generation_file = generation_file
        self.http_timeout = http_timeout
        self.max_frame = max_frame
        self.reporter = reporter
        self._map: Any = None
        self._gen = b""
        self._retry_at = 0.0
        self._routes: dict[str, tuple[str, str, int]] = {}
        self._conns: dict[str, _PluginConnection] = {}
        self._seq = 0

    # ------------------------------------------------------------------ routes

    def _table(self) -> dict[str, tuple[str, str, int]]:
        """The current routes; PERF: an 8-byte read of a shared mapping per request."""
        mapping = self._map
        if mapping is None:
            now = time.monotonic()
            if now < self._retry_at:
                return {}
            mapping = self._map = open_generation(self.generation_file)
            if mapping is None:
                self._retry_at = now + RETRY_AFTER
                return {}
        gen = mapping[:SIZE]
        if gen != self._gen:
            if time.monotonic() < self._retry_at:
                return {}
            self._refresh(gen)
        return self._routes

    def _refresh(self, gen: bytes) -> None:
        try:
            table = self.control().call("routes", {}, ROUTES_TIMEOUT)
            routes = {
                str(route): (str(e["plugin"]), str(e["socket"]), int(e["pid"]))
                for route, e in table["routes"].items()
            }
        except (ToruError, OSError, KeyError, TypeError, ValueError, AttributeError):
            # An older or restarting supervisor: everything takes the supervisor path for a
            # second, then the table is asked for again.
            self._routes = {}
            self._gen = b""
            self._retry_at = time.monotonic() + RETRY_AFTER
            return
        self._routes = routes
        self._gen = gen
        live = {(plugin_id, pid) for plugin_id, _, pid in routes.values()}
        for plugin_id, conn in list(self._conns.items()):
            if (plugin_id, conn.pid) not in live:
                self._drop(plugin_id)

    def invalidate(self) -> None:
        """Ask for the table again before the next request (after a connection failed).

        The mapping is re-opened too: a supervisor started on a fresh ``run/`` made a new file.
        """
        self._gen = b""
        self._map = None
        self._retry_at = 0.0

    # ------------------------------------------------------------------ connections

    def _connect(self, plugin_id: str, path: str, pid: int) -> _PluginConnection | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect(path)
            sock.settimeout(None)
            kernel_timeout(sock, socket.SO_RCVTIMEO, self.http_timeout)
            kernel_timeout(sock, socket.SO_SNDTIMEO, self.http_timeout)
        except OSError:
            sock.close()
            self.invalidate()
            return None
        conn = self._conns[plugin_id] = _PluginConnection(
            sock, FrameReader(sock, self.max_frame), pid
        )
        return conn

    def _drop(self, plugin_id: str) -> None:
        conn = self._conns.pop(plugin_id, None)
        if conn is not None:
            conn.sock.close()

    def close(self) -> None:
        for plugin_id in list(self._conns):
            self._drop(plugin_id)

    # ------------------------------------------------------------------ requests

    def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict[str, str],
        body: bytes,
    ) -> ProxyResponse | None:
        """The plugin's answer, or None when the request must take the supervisor path.

        Raises ``GatewayTimeout`` (504) or ``BadGateway`` (502) once the request was sent.
        """
        entry = self._table().get(route)
        if entry is None:
            return None
        plugin_id, sock_path, pid = entry
        conn = self._conns.get(plugin_id)
        if conn is None:
            conn = self._connect(plugin_id, sock_path, pid)
            if conn is None:
                return None
        self._seq += 1
        rid = f"d{self._seq}"
        try:
            frame = encode(
                http_request_message(rid, HttpRequest(method, path, headers, body)),
                self.max_frame,
            )
        except ProtocolError:
            return None  # too large: the supervisor path gives its usual answer
        t0 = time.perf_counter()
        try:
            conn.sock.sendall(frame)
        except BlockingIOError:  # SO_SNDTIMEO: the plugin stopped reading
            self._drop(plugin_id)
            self.reporter.timeout(plugin_id)
            raise GatewayTimeout(f"plugin {plugin_id} did not read the request in time") from None
        except OSError:
            self._drop(plugin_id)  # it went away: nothing was delivered
            self.invalidate()
            return None
        msg = self._read_reply(conn, plugin_id, rid, t0)
        self.reporter.latency(plugin_id, time.perf_counter() - t0)
        return _response(plugin_id, msg)

    def _read_reply(
        self, conn: _PluginConnection, plugin_id: str, rid: str, t0: float
    ) -> dict[str, Any]:
        try:
            while True:
                msg = conn.reader.read()
                if msg is None:
                    raise OSError("the plugin closed the connection")
                if type(msg) is dict and msg.get("request_id") == rid:
                    return msg
                # not ours (a plugin may send other messages): skip it, within the deadline
                if time.perf_counter() - t0 > self.http_timeout:
                    raise BlockingIOError
        except BlockingIOError:  # SO_RCVTIMEO expired
            self._drop(plugin_id)  # a late reply must not be read as the next request's
            self.reporter.timeout(plugin_id)
            raise GatewayTimeout(f"plugin {plugin_id} did not answer in time") from None
        except ProtocolError as exc:
            self._drop(plugin_id)
            raise BadGateway(f"plugin {plugin_id} sent a malformed reply: {exc}") from None
        except OSError as exc:
            self._drop(plugin_id)
            self.invalidate()
            self._check_supervisor()
            raise BadGateway(f"plugin {plugin_id}: connection lost ({exc})") from None

    def _check_supervisor(self) -> None:
        """Raise 503 if the plugin went away because the supervisor did (its plugins die with
        it): the same answer the supervisor path gives while the supervisor is restarting."""
        try:
            self.control().call("ping", {}, ROUTES_TIMEOUT)
        except SupervisorUnavailable:
            raise
        except (ToruError, OSError):
            pass


def _response(plugin_id: str, msg: dict[str, Any]) -> ProxyResponse:
    """The checks of the supervisor path (``HttpRelay``): an object with a status in 100-599."""
    payload = msg.get("payload")
    if type(payload) is not dict:
        raise BadGateway(f"plugin {plugin_id} sent a reply without a payload object")
    status = payload.get("status")
    if type(status) is not int or not 100 <= status <= 599:
        raise BadGateway(f"plugin {plugin_id} answered without a valid status")
    try:
        body = decode_body(payload, "plugin reply")
    except ProtocolError as exc:
        raise BadGateway(str(exc)) from None
    headers = payload.get("headers")
    return ProxyResponse(status, headers if type(headers) is dict else {}, body)


_local = threading.local()


def flush_reports() -> None:
    """Send what this process has not reported yet (gunicorn's ``worker_exit`` calls it, so
    a worker that is restarted or stopped gracefully loses no samples)."""
    for reporter in list(_all_reporters):
        reporter.flush()


def direct_channel_factory(
    control: Callable[[], Any],
    control_socket: str | Path,
    generation_file: Path,
    http_timeout: float,
    max_frame: int,
) -> Callable[[], DirectChannel]:
    """``direct()`` for the app: this thread's channel, sharing one reporter per process."""
    reporter = Reporter(control_socket, max_frame=max_frame)

    def direct() -> DirectChannel:
        channel = getattr(_local, "direct", None)
        if channel is None:
            channel = _local.direct = DirectChannel(
                control, generation_file, http_timeout, max_frame, reporter
            )
        return channel

    return direct
