"""``run(plugin)``: the SDK's process runtime on asyncio (uvloop when importable).

Layers, as in asyncpg: the codec (``Decoder``) parses, ``_Connection`` is the thin asyncio
adapter (``data_received`` feeds the decoder, replies go out on the transport), and
``PluginServer`` owns the plugin's lifecycle: init once, concurrent requests answered by
``request_id``, graceful shutdown, and exit when the host goes away.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from .aio import FramedProtocol
from .codec import ProtocolError, frame_body
from .heap import freeze_startup_heap
from .kv import KvClient, KvStore, MemoryKv
from .log import PluginLogger
from .malloc import keep_big_buffers
from .messages import (
    BINARY_BODIES,
    HttpRequest,
    HttpResponse,
    PluginError,
    PluginMetadata,
    RequestId,
    http_response_message,
    kv_response_message,
    parse_http_request,
    parse_kv_op,
    parse_message,
)
from .plugin import PluginContext, ToruPlugin, error_response, to_response

__all__ = ["PluginServer", "run", "serve"]

PROBE_HEADER = "x-toru-probe"
SHUTDOWN_GRACE = 2.0  # seconds in-flight requests get after ``shutdown``; the host waits 5
PARENT_POLL = 0.5

_NOT_STARTED_BY_HOST = """\
This is a Toru plugin ({name} {version}). It is started by the Toru host, not by hand.

Install it by copying the executable into the host's plugin directory as
<home>/plugins/{id}.binary, then enable it:

    toru plugins enable {id}

To inspect it:     {prog} --metadata
To test it:        toru plugin check {prog}   (or python -m toru_plugin_api.check {prog})

(TORU_PLUGIN_SOCKET is not set, so there is no socket to listen on.)
"""


class _Connection(FramedProtocol):
    """One host connection: frames in, replies out (any order, matched by request_id).

    Decoding and corked writes are the base's: replies produced inline for a pipelined chunk
    (probes, bundle, sync handlers) leave in one write.
    """

    def __init__(self, server: PluginServer) -> None:
        super().__init__()
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._conns.add(self)

    def on_closed(self, reason: str) -> None:
        self.server._conns.discard(self)

    def on_message(self, msg: Any) -> None:
        self.server._dispatch(self, msg)

    def on_protocol_error(self, exc: ProtocolError) -> None:
        # NOTE: what came before the bad frame was answered; then close, never guess.
        self.server.log.warn("closing connection after a malformed frame", error=str(exc))
        self.close("malformed frame")


class PluginServer:
    """Serves one ``ToruPlugin`` on a Unix socket until shutdown or the host goes away.

    ``start()`` and ``stop()`` are idempotent; ``wait()`` returns the exit code.
    """

    def __init__(
        self,
        plugin: ToruPlugin,
        socket_path: str,
        *,
        instance_id: str | None = None,
        config: dict[str, Any] | None = None,
        kv: KvStore | None = None,
        kv_fd: int | None = None,
        kv_timeout: float = 5.0,
        watch_parent: bool = True,
        log: PluginLogger | None = None,
        freeze_heap: bool = False,
    ) -> None:
        md = plugin.metadata
        if isinstance(md, dict):  # a plugin class built without ToruPlugin.__init_subclass__
            md = plugin.metadata = PluginMetadata.from_json(md)
        self.plugin = plugin
        self.metadata: PluginMetadata = md
        self.socket_path = socket_path
        self.instance_id = instance_id or os.environ.get("TORU_INSTANCE_ID", "")
        self.config = dict(config or {})
        self.log = log or PluginLogger(md.id)
        self._kv = kv
        self._kv_fd = kv_fd
        self._kv_timeout = kv_timeout
        self._watch_parent = watch_parent
        self._freeze_heap = freeze_heap  # ``run()``'s own process only, never a test's
        self._conns: set[_Connection] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        self._ready = False
        self._init_task: asyncio.Task[None] | None = None
        self._init_error = "plugin init failed"  # "init raised X: ..." once it has
        self._done: asyncio.Future[int] | None = None
        self._stopping = False
        self._watcher: asyncio.Task[None] | None = None
        self._stop_early: tuple[int, str] | None = None
        self._own_health = plugin.has_route("GET", "/health")
        self._own_bundle = plugin.has_route("GET", "/bundle.js")
        # The inline fast path needs the SDK's own routing and at least one sync handler.
        self._inline = bool(plugin._sync_handlers) and (
            type(plugin).handle_http is ToruPlugin.handle_http
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Connect the KV channel and listen on the socket (stale socket file removed, 0600)."""
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._done = loop.create_future()
        if self._kv is None:
            if self._kv_fd is not None:
                self._kv = await KvClient.connect_fd(
                    self._kv_fd, self._kv_timeout, on_lost=self._host_gone_kv
                )
            else:
                self._kv = MemoryKv()
        sock = _listen_atomically(self.socket_path)
        self._server = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
        if self._watch_parent:
            self._watcher = loop.create_task(self._watch_parent_loop())
        self.log.debug("listening", socket=self.socket_path)
        if self._stop_early is not None:
            self.stop(*self._stop_early)

    async def wait(self) -> int:
        """Wait until the server stopped; returns the process exit code."""
        assert self._done is not None, "start() first"
        return await asyncio.shield(self._done)

    def stop(self, code: int = 0, reason: str = "shutdown") -> None:
        """Begin a graceful stop (idempotent): finish in-flight requests, then exit."""
        if self._done is None:  # signalled before start() finished: stop right after it
            self._stop_early = (code, reason)
            return
        if self._stopping:
            return
        self._stopping = True
        self._stop_task = self._loop.create_task(self._graceful_stop(code, reason))

    async def _graceful_stop(self, code: int, reason: str) -> None:
        self.log.info("stopping", reason=reason)
        if self._watcher is not None:
            self._watcher.cancel()
        if self._server is not None:
            self._server.close()
        busy = [t for t in self._tasks if not t.done() and t is not asyncio.current_task()]
        if busy:
            _, late = await asyncio.wait(busy, timeout=SHUTDOWN_GRACE)
            for t in late:
                t.cancel()
        try:
            if self._ready:
                await asyncio.wait_for(self.plugin.shutdown(), SHUTDOWN_GRACE)
        except Exception as exc:
            self.log.exception("plugin shutdown hook failed", exc)
        for conn in list(self._conns):
            conn.close("plugin stopping")
        for t in list(self._tasks):
            if not t.done() and t is not asyncio.current_task():
                t.cancel()
        if isinstance(self._kv, KvClient):
            self._kv.on_lost = None
            self._kv.close()
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)
        if self._done is not None and not self._done.done():
            self._done.set_result(code)

    def _host_gone_kv(self) -> None:
        self.stop(0, "host closed the kv channel")

    async def _watch_parent_loop(self) -> None:
        ppid = os.getppid()
        while not self._stopping:
            await asyncio.sleep(PARENT_POLL)
            if os.getppid() != ppid:
                self.stop(0, "host process went away")
                return

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ init

    def _ensure_init(self, payload: dict[str, Any] | None = None) -> asyncio.Task[None]:
        if self._init_task is None:
            if payload:
                iid = payload.get("instance_id")
                if isinstance(iid, str) and iid:
                    self.instance_id = iid
                cfg = payload.get("config")
                if isinstance(cfg, dict):
                    self.config.update(cfg)
            self._init_task = self._loop.create_task(self._run_init())
        return self._init_task

    async def _run_init(self) -> None:
        assert self._kv is not None
        ctx = PluginContext(
            instance_id=self.instance_id,
            config=self.config,
            kv=self._kv,
            log=self.log,
            plugin_id=self.metadata.id,
        )
        self.plugin.ctx = ctx
        try:
            await self.plugin.init(ctx)
        except Exception as exc:
            self._init_error = f"init raised {type(exc).__name__}: {exc}"
            self.log.exception(self._init_error, exc)
            self.stop(1, "init failed")
            return
        self._ready = True
        if self._freeze_heap:
            freeze_startup_heap()  # PERF: no full GC over start-up objects mid-request
        self.log.info("initialised", instance_id=self.instance_id, version=self.metadata.version)

    # ------------------------------------------------------------------ messages

    def _dispatch(self, conn: _Connection, obj: Any) -> None:
        try:
            msg = parse_message(obj)
        except ProtocolError as exc:
            rid = obj.get("request_id") if isinstance(obj, dict) else None
            self.log.warn("ignoring malformed message", error=str(exc))
            if type(rid) in (str, int) and obj.get("type") == "http":
                conn.send(http_response_message(rid, error_response(400, "bad_request", str(exc))))
            return
        kind = msg.type
        if kind == "http":
            try:
                req = parse_http_request(msg.payload, frame_body(obj))
            except ProtocolError as exc:
                self.log.warn("malformed http request", error=str(exc))
                conn.send(
                    http_response_message(
                        msg.request_id, error_response(400, "bad_request", str(exc))
                    )
                )
                return
            if req.method == "GET":
                path = req.route_path
                if (
                    path == "/health"
                    and not self._own_health
                    and req.header(PROBE_HEADER) is not None
                ):
                    conn.send(_probe_reply(msg.request_id))
                    return
                if path == "/bundle.js" and not self._own_bundle:
                    conn.send(self._bundle_reply(msg.request_id))
                    return
            if self._ready and self._inline:
                self._http_inline(conn, msg.request_id, req)
                return
            self._spawn(self._http(conn, msg.request_id, req))
        elif kind == "kv":
            self._spawn(self._kv_op(conn, msg.request_id, msg.payload))
        else:
            action = msg.payload.get("action")
            if action == "init":
                self._ensure_init(msg.payload)
            elif action == "shutdown":
                self.stop(0, "shutdown requested by host")
            else:
                self.log.debug("ignoring unknown lifecycle action", action=str(action))

    def _http_inline(self, conn: _Connection, rid: RequestId | None, req: HttpRequest) -> None:
        """PERF: route here and call a plain-``def`` handler inline: no Task, no extra loop pass.

        Taken only when the plugin keeps the SDK's routing (``handle_http`` not overridden) and
        has sync handlers; coroutine handlers still get a Task each (they may await, use
        ``asyncio.timeout`` or ``current_task()``). Measured with ``benchmarks/tools/micro_sdk.py``.
        """
        plugin = self.plugin
        found = plugin.route_for(req)
        if type(found) is tuple:
            name, head = found
            if name not in plugin._sync_handlers:
                self._spawn(self._http(conn, rid, req, found))
                return
            try:
                result = getattr(plugin, name)(req)
                # a def that returns a coroutine: await it (PERF: the type check first)
                if type(result) is not HttpResponse and inspect.isawaitable(result):
                    self._spawn(self._http(conn, rid, req, found, result))
                    return
                resp = to_response(result)
                if head:
                    resp.body = b""
            except Exception as exc:
                resp = self._error_answer(exc, req)
        else:
            resp = found  # 404 / 405
        self._reply(conn, rid, req, resp)

    async def _http(
        self,
        conn: _Connection,
        rid: RequestId | None,
        req: HttpRequest,
        found: tuple[str, bool] | None = None,
        pending: Any = None,
    ) -> None:
        if not self._ready:
            await self._ensure_init()
            if not self._ready:
                conn.send(
                    http_response_message(rid, error_response(503, "not_ready", self._init_error))
                )
                return
        try:
            if found is None:
                resp = await self.plugin.handle_http(req)
            else:  # routed already by _http_inline
                name, head = found
                result = pending if pending is not None else getattr(self.plugin, name)(req)
                if inspect.isawaitable(result):
                    result = await result
                resp = to_response(result)
                if head:
                    resp.body = b""
        except asyncio.CancelledError:
            conn.send(
                http_response_message(
                    rid, error_response(503, "shutting_down", "plugin is stopping")
                )
            )
            raise
        except Exception as exc:
            resp = self._error_answer(exc, req)
        self._reply(conn, rid, req, resp)

    def _error_answer(self, exc: Exception, req: HttpRequest) -> HttpResponse:
        """A handler's exception as the answer: its own status for ``PluginError``, else 500."""
        if isinstance(exc, PluginError):
            return error_response(exc.status, exc.code, str(exc))
        self.log.exception("handler failed", exc, method=req.method, path=req.route_path)
        return error_response(500, "plugin_error", f"internal error in plugin {self.metadata.id}")

    def _reply(
        self, conn: _Connection, rid: RequestId | None, req: HttpRequest, resp: HttpResponse
    ) -> None:
        try:
            if req.binary:  # answered in the form it was asked (docs/plugins/PROTOCOL.md 3)
                conn.send(http_response_message(rid, resp, True), resp.body_bytes)
            else:
                conn.send(http_response_message(rid, resp))
        except (TypeError, ValueError, ProtocolError) as exc:
            self.log.exception("could not encode the response", exc, path=req.route_path)
            conn.send(
                http_response_message(
                    rid, error_response(500, "plugin_error", "unencodable response")
                )
            )

    async def _kv_op(
        self, conn: _Connection, rid: RequestId | None, payload: dict[str, Any]
    ) -> None:
        try:
            op = parse_kv_op(payload)
            if not self._ready:
                await self._ensure_init()
                if not self._ready:
                    raise PluginError(self._init_error, 503, "not_ready")
            value = await self.plugin.handle_kv(op)
            conn.send(kv_response_message(rid, value if isinstance(value, str) else None))
        except (PluginError, ProtocolError) as exc:
            conn.send(kv_response_message(rid, error=str(exc)))
        except Exception as exc:
            self.log.exception("kv handler failed", exc)
            conn.send(kv_response_message(rid, error="internal error"))

    def _bundle_reply(self, rid: RequestId | None) -> dict[str, Any]:
        from .messages import HttpResponse

        try:
            data = self.plugin.bundle_bytes()
        except PluginError as exc:
            self.log.error("bundle unavailable", error=str(exc))
            return http_response_message(rid, error_response(500, exc.code, str(exc)))
        if data is None:
            return http_response_message(
                rid, error_response(404, "not_found", "this plugin has no UI bundle")
            )
        headers = {
            "Content-Type": "application/javascript; charset=utf-8",
            "Cache-Control": "no-cache",
        }
        return http_response_message(rid, HttpResponse(200, headers, data))


_PROBE_PAYLOAD = {
    "status": 200,
    "headers": {"Content-Type": "application/json"},
    "body": '{"status":"ok"}',
}


def _probe_reply(rid: RequestId | None) -> dict[str, Any]:
    from .messages import make_message

    return make_message("http", _PROBE_PAYLOAD, rid)


def _listen_atomically(path: str) -> socket.socket:
    """A listening Unix socket at ``path``, mode 0600, that never exists half-ready.

    NOTE: bind + listen happen on a temporary name that is then renamed over ``path``, so a
    host that sees the file can connect at once (no ECONNREFUSED window), and a stale socket
    left by a crashed predecessor is replaced in the same step.
    """
    st = None
    with contextlib.suppress(FileNotFoundError):
        st = os.lstat(path)
    if st is not None and not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    tmp = os.path.join(os.path.dirname(path), f".tp{os.getpid()}")
    if len(tmp.encode()) >= 100:  # Unix socket paths are limited to 107 bytes
        tmp = ""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        if tmp:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            sock.bind(tmp)
        else:
            _remove_stale_socket(path)
            sock.bind(path)
        os.chmod(tmp or path, 0o600)
        sock.listen(128)
        if tmp:
            os.rename(tmp, path)
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    sock.setblocking(False)
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RuntimeError(f"{path} exists and is not a socket; refusing to replace it")
    os.unlink(path)


async def serve(plugin: ToruPlugin, socket_path: str, **kwargs: Any) -> int:
    """Serve ``plugin`` on ``socket_path`` until it stops; returns the exit code.

    Keyword arguments are ``PluginServer``'s. Use this to embed a plugin in your own loop
    (``toru_plugin_api.testing`` does); ``run()`` is the usual entry point.
    """
    server = PluginServer(plugin, socket_path, **kwargs)
    await server.start()
    return await server.wait()


def _new_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run(plugin: ToruPlugin, argv: list[str] | None = None) -> NoReturn:
    """The plugin executable's main: ``--metadata``, or serve on ``TORU_PLUGIN_SOCKET``.

    Exits the process: 0 after a graceful shutdown, 1 on a start-up error (for instance when
    started by hand, without ``TORU_PLUGIN_SOCKET``; it then explains how plugins are run).
    """
    args = sys.argv[1:] if argv is None else argv
    md = (
        plugin.metadata
        if isinstance(plugin.metadata, PluginMetadata)
        else PluginMetadata.from_json(plugin.metadata)
    )
    if "--metadata" in args:
        # The SDK serves every connection it accepts concurrently: say so, so the host may
        # let its workers connect directly (docs/plugins/PROTOCOL.md, "multi_connection").
        # It reads and answers binary frames too, so bodies may travel as raw bytes.
        caps = (
            md.capabilities
            if BINARY_BODIES in md.capabilities
            else (*md.capabilities, BINARY_BODIES)
        )
        announced = dataclasses.replace(md, multi_connection=True, capabilities=caps)
        sys.stdout.write(json.dumps(announced.to_json(), ensure_ascii=False) + "\n")
        sys.stdout.flush()
        sys.exit(0)
    prog = sys.argv[0] if sys.argv and sys.argv[0] else md.id
    if "-h" in args or "--help" in args:
        sys.stdout.write(
            _NOT_STARTED_BY_HOST.format(prog=prog, **md.to_json()).split("\n(")[0] + "\n"
        )
        sys.exit(0)
    socket_path = os.environ.get("TORU_PLUGIN_SOCKET")
    if not socket_path:
        sys.stderr.write(_NOT_STARTED_BY_HOST.format(prog=prog, **md.to_json()))
        sys.exit(1)
    kv_fd = os.environ.get("TORU_KV_FD")
    config: dict[str, Any] = {}
    raw_cfg = os.environ.get("TORU_PLUGIN_CONFIG")
    if raw_cfg:
        try:
            loaded = json.loads(raw_cfg)
            config = loaded if isinstance(loaded, dict) else {}
        except ValueError:
            sys.stderr.write("TORU_PLUGIN_CONFIG is not a JSON object; ignored\n")
    kv_timeout = float(os.environ.get("TORU_KV_TIMEOUT") or 5)
    keep_big_buffers()  # PERF: large bodies without a page fault per page (malloc.py)

    async def main() -> int:
        server = PluginServer(
            plugin,
            socket_path,
            config=config,
            kv_fd=int(kv_fd) if kv_fd and kv_fd.isdigit() else None,
            kv_timeout=kv_timeout,
            freeze_heap=True,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.stop, 0, f"signal {sig.name}")
        await server.start()
        return await server.wait()

    try:
        with asyncio.Runner(loop_factory=_new_loop_factory()) as runner:
            code = runner.run(main())
    except OSError as exc:
        PluginLogger(md.id).error("could not start", error=str(exc), socket=socket_path)
        code = 1
    sys.exit(code)
