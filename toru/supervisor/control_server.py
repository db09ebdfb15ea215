"""The control socket: protocol v1 of docs/control-protocol.md, served to workers and the CLI.

Each connection is an asyncio Protocol. Requests may be pipelined; replies go out as they
complete (matched by ``id``). ``http`` and the other quick operations are answered inside
``data_received``; ``enable``/``disable``/``restart``/``rescan`` run as tasks the server owns; ``logs``
reads files in a worker thread. A malformed frame closes the connection.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toru.errors import BadRequest, ToruError
from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.codec import (
    HEADER,
    ProtocolError,
    dumps,
    encode_payload,
    frame_body,
)
from toru_plugin_api.messages import encode_body

from .supervisor import Supervisor

VERSION = 1


class ControlServer:
    """Owns the listening socket, the connections and the tasks of slow operations."""

    def __init__(self, supervisor: Supervisor, path: Path) -> None:
        self.supervisor = supervisor
        self.path = path
        self.max_frame = supervisor.config.max_frame
        self.connections: set[ControlConnection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.AbstractServer | None = None
        sup = supervisor
        self.sync_ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "hello": lambda a: {
                "version": VERSION,
                "instance_id": sup.instance_id,
                "pid": os.getpid(),
                "started_at": sup.started_at,
                "discovery_done": sup.discovery_done,
            },
            "ping": lambda a: {"ok": True, "store": sup.store.health()},
            "list": lambda a: sup.list(),
            "warnings": lambda a: sup.warnings(),
            "get": lambda a: sup.get(a.get("plugin")),
            "events": sup.events,
            "kv": sup.kv,
            "stats": sup.stats,
        }
        self.async_ops: dict[str, Callable[[dict[str, Any]], Any]] = {
            "enable": lambda a: sup.enable(a.get("plugin")),
            "disable": lambda a: sup.disable(a.get("plugin")),
            "restart": lambda a: sup.restart(a.get("plugin")),
            "rescan": lambda a: sup.rescan(),
            "approve": lambda a: sup.approve(a.get("plugin")),
            "install": sup.install,
            "logs": self._logs,
        }

    async def _logs(self, args: dict[str, Any]) -> Any:
        self.supervisor.logs_args(args)  # validate in the loop: errors are cheap and typed
        return await asyncio.to_thread(self.supervisor.read_logs, args)

    async def start(self) -> None:
        """Listen on ``path`` (0600; its directory's mode is toru/home_modes.py's: 0700, or
        0711 so plugins of another uid reach run/p/); a stale socket file is replaced."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.get_running_loop().create_unix_server(
                lambda: ControlConnection(self), str(self.path), backlog=512
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        """Stop listening, drop connections, cancel slow operations, remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for c in list(self.connections):
            c.close()
        for t in list(self.tasks):
            t.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.path.unlink(missing_ok=True)

    def run_task(self, conn: ControlConnection, rid: Any, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)

        def finished(t: asyncio.Task[Any]) -> None:
            self.tasks.discard(t)
            if t.cancelled():
                return
            exc = t.exception()
            if exc is None:
                conn.reply(rid, t.result())
            elif isinstance(exc, ToruError):
                conn.fail(rid, exc)
            else:
                self.supervisor.log.error("control operation failed", error=repr(exc))
                conn.fail(rid, ToruError(f"internal error: {exc}"))

        task.add_done_callback(finished)


class ControlConnection(FramedProtocol):
    """One worker's or CLI's connection: requests in, replies out as they complete."""

    def __init__(self, server: ControlServer) -> None:
        super().__init__(server.max_frame)
        self.server = server
        self.sup = server.supervisor

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server.connections.add(self)

    def on_closed(self, reason: str) -> None:
        self.server.connections.discard(self)

    def on_protocol_error(self, exc: ProtocolError) -> None:
        self.sup.log.warn("bad frame on the control socket", error=str(exc))
        self.close("bad frame")  # after the replies already queued

    def on_message(self, msg: dict[str, Any]) -> None:
        rid = msg.get("id")
        op = msg.get("op")
        args = msg.get("args")
        if args is None:
            args = {}
        try:
            if msg.get("v", VERSION) != VERSION:
                raise BadRequest(f"unsupported control protocol version {msg.get('v')!r}")
            if type(args) is not dict:
                raise BadRequest("args must be an object")
            if op == "http":  # a body in a binary frame is relayed as the bytes it came as
                if msg.get("reply") == "message":
                    self.sup.http(args, rid, self.answer_message, self.fail, frame_body(msg))
                else:
                    self.sup.http(args, rid, self.answer_result, self.fail, frame_body(msg))
                return
            handler = self.server.sync_ops.get(op)  # type: ignore[arg-type]
            if handler is not None:
                self.reply(rid, handler(args))
                return
            slow = self.server.async_ops.get(op)  # type: ignore[arg-type]
            if slow is None:
                raise BadRequest(f"unknown control operation {op!r}")
            self.server.run_task(self, rid, slow(args))
        except ToruError as exc:
            self.fail(rid, exc)
        except Exception as exc:  # a bug in one operation must not take the socket down
            self.sup.log.error(f"control operation {op!r} failed", error=repr(exc))
            self.fail(rid, ToruError(f"internal error: {exc}"))

    def answer_result(
        self, rid: Any, payload: dict[str, Any], raw: bytes, body: bytes | None
    ) -> None:
        """Answer ``http`` in the default form: ``result`` is the reply's payload (a binary
        reply's body put into it as a JSON string: this form is all JSON)."""
        if body is not None:
            payload = dict(payload)
            payload["body"], b64 = encode_body(body)
            if b64:
                payload["body_encoding"] = "base64"
        self.reply(rid, payload)

    def answer_message(
        self, rid: Any, payload: dict[str, Any], raw: bytes, body: bytes | None
    ) -> None:
        """Answer ``http`` (asked with ``"reply": "message"``) with the plugin's message as is.

        PERF: ``{"id": rid, "ok": true, "message": <the plugin's JSON bytes>}`` is valid JSON
        by construction (``raw`` parsed as an object in ``PluginConnection``, its payload
        checked in ``HttpRelay``); splicing it saves re-encoding the reply, and a large body
        is copied once instead of being escaped again. A binary reply's body goes on as the
        tail of a binary frame, untouched (the worker's decoder reads both kinds).
        """
        if self.closed:
            return  # the client went away; nothing to answer
        head = b'{"id":%s,"ok":true,"message":' % (b"%d" % rid if type(rid) is int else dumps(rid))
        size = len(head) + len(raw) + 1 + (0 if body is None else 4 + len(body))
        if size > self.max_frame:
            err = ToruError(
                f"reply too large: a {size}-byte frame (limit {self.max_frame} bytes)",
                code="bad_gateway",
                status=502,
            )
            self.fail(rid, err)
            return
        if body is None:
            self.queue_frame(HEADER.pack(size) + head, raw, b"}")
        else:
            self.queue_binary(head + raw + b"}", body)

    def reply(self, rid: Any, result: Any) -> None:
        self._send(rid, {"id": rid, "ok": True, "result": result})

    def fail(self, rid: Any, err: ToruError) -> None:
        self._send(rid, {"id": rid, "ok": False, "error": err.to_dict()})

    def _send(self, rid: Any, obj: dict[str, Any]) -> None:
        if self.closed:
            return  # the client went away; nothing to answer
        try:
            frame = encode_payload(dumps(obj), self.server.max_frame)
        except ProtocolError as exc:
            err = ToruError(f"reply too large: {exc}", code="bad_gateway", status=502)
            frame = encode_payload(dumps({"id": rid, "ok": False, "error": err.to_dict()}))
        self.queue_frame(frame)
