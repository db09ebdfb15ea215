"""Scenario (g), a design prototype: Toru's real web app, but the worker sends the proxied
request straight to the plugin's socket instead of through the supervisor.

Everything else is the production path (auth, CSRF rules, header filtering, metrics, the
same gunicorn config); only ``control().http`` is replaced. It shows what a "supervisor
brokers a direct worker<->plugin channel for plugins that accept several connections"
design would buy. It is a measurement tool, NOT a production path: it skips the
supervisor's routing checks (enabled/running state, 503 while starting) and timeouts
are only the socket's.

    TORU_HOME=H TORU_BIND=127.0.0.1:P gunicorn -c toru/wsgi/gunicorn_conf.py benchmarks.direct_app:application

With ``TORU_BENCH_CANNED=1`` (scenario (h)) the worker asks the plugin once per route and
then answers every request with that same reply, without any socket: what the web tier
costs on its own, with no inter-process hop at all.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any

from toru_plugin_api.codec import FrameReader, encode
from toru_plugin_api.messages import HttpRequest, decode_body, http_request_message


class DirectControl:
    """A control client whose ``http`` talks protocol v1 to the plugin socket itself."""

    def __init__(self, real: Any, socket_dir: str, timeout: float) -> None:
        self.real = real
        self.socket_dir = socket_dir
        self.timeout = timeout
        self._routes: dict[str, str] = {}
        self._conns: dict[str, tuple[socket.socket, FrameReader]] = {}
        self._seq = 0
        self._canned: dict[tuple[str, str, str], Any] | None = (
            {} if os.environ.get("TORU_BENCH_CANNED") == "1" else None
        )

    def _plugin_for(self, route: str) -> str | None:
        if route not in self._routes:
            self._routes = {p["route"]: p["id"] for p in self.real.call("list", {}, 2.0)}
        return self._routes.get(route)

    def _conn(self, plugin_id: str) -> tuple[socket.socket, FrameReader]:
        c = self._conns.get(plugin_id)
        if c is None:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(self.timeout)
            s.connect(f"{self.socket_dir}/{plugin_id}.sock")
            c = self._conns[plugin_id] = (s, FrameReader(s))
        return c

    def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict | None = None,
        body: Any = b"",
        timeout: float | None = None,
    ) -> Any:

        if self._canned is not None:
            key = (route, method, path)
            reply = self._canned.get(key)
            if reply is None:
                reply = self._canned[key] = self._http(route, method, path, headers, body)
            return reply
        return self._http(route, method, path, headers, body)

    def _http(self, route: str, method: str, path: str, headers: dict | None, body: Any) -> Any:
        from toru.errors import BadGateway, NotFound
        from toru.supervisor.client import ProxyResponse

        plugin_id = self._plugin_for(route)
        if plugin_id is None:
            raise NotFound(f"no plugin serves route {route!r}")
        self._seq += 1
        rid = f"w{self._seq}"
        sock, reader = self._conn(plugin_id)
        try:
            sock.sendall(
                encode(
                    http_request_message(rid, HttpRequest(method, path, headers or {}, body or b""))
                )
            )
            while True:
                msg = reader.read()
                if msg is None:
                    raise OSError("plugin closed the connection")
                if msg.get("request_id") == rid:
                    break
        except OSError as exc:
            self._conns.pop(plugin_id, None)
            sock.close()
            raise BadGateway(f"plugin {plugin_id}: {exc}") from None
        payload = msg.get("payload") or {}
        return ProxyResponse(
            payload.get("status", 502),
            payload.get("headers") or {},
            decode_body(payload, "plugin reply"),
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


_app: Callable[..., Iterable[bytes]] | None = None
_local = threading.local()
_lock = threading.Lock()


def _build() -> Callable[..., Iterable[bytes]]:
    global _app
    with _lock:
        if _app is None:
            from toru.supervisor.client import ControlClient
            from toru.wsgi import create_app, prepare_environment

            config = prepare_environment()

            def control() -> DirectControl:
                c = getattr(_local, "direct", None)
                if c is None:
                    real = ControlClient.for_thread(str(config.control_socket))
                    c = _local.direct = DirectControl(
                        real, str(config.plugin_socket_dir), config.http_timeout
                    )
                return c

            _app = create_app(config, control=control)
    return _app


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """WSGI entry point (built on first use in each worker, like ``toru.wsgi``)."""
    return (_app or _build())(environ, start_response)
