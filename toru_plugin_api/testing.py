"""Test a plugin over a real socket, the way the host talks to it (like ``falcon.testing``).

    from toru_plugin_api.testing import PluginHarness

    def test_counter():
        with PluginHarness.subprocess("build/plugins/hello-python.binary") as h:
            assert h.request("POST", "/counter/increment").json() == {"count": 1}
            assert h.kv["count"] == "1"

    def test_in_process():
        with PluginHarness.in_process(MyPlugin()) as h:
            assert h.request("GET", "/items/7").status == 200

``KvDouble`` is the host's side of the plugin->host KV channel: it serves the real protocol
over a real ``socketpair()`` from a thread and keeps the store in a plain dict.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as _json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import blocking
from .blocking import Channel
from .codec import ProtocolError, encode, frame_body
from .messages import (
    HttpRequest,
    KvOp,
    http_request_message,
    kv_request_message,
    kv_response_message,
    lifecycle_init,
    lifecycle_shutdown,
    parse_kv_op,
    parse_kv_result,
    parse_message,
    validate_http_reply,
)
from .plugin import ToruPlugin

__all__ = ["HarnessError", "KvDouble", "PluginHarness", "Reply", "connect_unix"]


class HarnessError(RuntimeError):
    """The plugin under test did not start, answer or stop as the protocol requires."""


@dataclass
class Reply:
    """A plugin's answer to ``PluginHarness.request``."""

    status: int
    headers: dict[str, str]
    body: bytes
    request_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return _json.loads(self.body)

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lname:
                return v
        return default


def connect_unix(path: str, timeout: float = 5.0) -> socket.socket:
    """Connect to a plugin socket, retrying while it is bound but not yet listening.

    NOTE: a plugin that binds before it listens (as the original ones do) has a short window
    where the file exists but connect() is refused; the host retries the same way.
    """
    sock = blocking.connect_unix(path, timeout, retry_refused=True)
    sock.settimeout(timeout)  # a raw socket for the caller: reads bounded too
    return sock


class KvDouble:
    """The host end of a plugin's KV channel, served from a thread over a real socketpair.

    ``store`` is the namespace (a dict of str -> str); ``ops`` records every request.
    Pass ``plugin_fd`` to the plugin (``TORU_KV_FD``), then ``start()``.
    """

    def __init__(self, data: dict[str, str] | None = None) -> None:
        self.store: dict[str, str] = dict(data or {})
        self.ops: list[KvOp] = []
        self.host_sock, self.plugin_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def plugin_fd(self) -> int:
        return self.plugin_sock.fileno()

    def start(self) -> KvDouble:
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="kv-double", daemon=True)
            self._thread.start()
        return self

    def release_plugin_end(self) -> int:
        """Give up our copy of the plugin's end (after a fork, or to hand the fd over)."""
        return self.plugin_sock.detach()

    def _serve(self) -> None:
        channel = Channel(self.host_sock)
        while True:
            try:
                obj = channel.read(None)
            except (OSError, ProtocolError):
                return
            if obj is None:
                return
            try:
                msg = parse_message(obj)
                op = parse_kv_op(msg.payload, allow_list=True)
            except ProtocolError as exc:
                reply = kv_response_message(obj.get("request_id"), error=str(exc))
            else:
                self.ops.append(op)
                reply = kv_response_message(msg.request_id, self.apply(op))
            try:
                channel.send(reply)
            except OSError:
                return

    def apply(self, op: KvOp) -> Any:
        with self._lock:
            if op.action == "get":
                return self.store.get(op.key)
            if op.action == "set":
                self.store[op.key] = op.value or ""
                return op.value
            if op.action == "delete":
                self.store.pop(op.key, None)
                return None
            return sorted(k for k in self.store if k.startswith(op.prefix))

    def close(self) -> None:
        """Close both ends (idempotent); the plugin sees EOF, as when the host dies."""
        for s in (self.host_sock, self.plugin_sock):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        if self._thread is not None:
            self._thread.join(2)


class PluginHarness:
    """A plugin under test, reached over its real Unix socket. Use as a context manager.

    Build one with ``PluginHarness.subprocess(path)`` (an executable, as the host would run
    it) or ``PluginHarness.in_process(plugin)`` (an SDK plugin served by a loop in a thread).
    ``close()`` is idempotent: it sends ``shutdown``, waits, then kills what is left.
    """

    def __init__(self, workdir: Path, kv: KvDouble) -> None:
        self.workdir = workdir
        self.socket_path = str(workdir / "plugin.sock")
        self.kv_double = kv
        self.process: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Any = None
        self._channel: Channel | None = None
        self._closed = False
        self.binary_bodies = False  # bodies as raw bytes in binary frames (see the constructors)

    # ------------------------------------------------------------------ constructors

    @classmethod
    def subprocess(
        cls,
        path: str | os.PathLike[str],
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        instance_id: str = "test-instance",
        kv_data: dict[str, str] | None = None,
        init: bool = True,
        start_timeout: float = 5.0,
        binary_bodies: bool = False,
    ) -> PluginHarness:
        """Start the executable at ``path`` with the host's environment and connect.

        ``binary_bodies``: send bodies as raw bytes in binary frames, as the host does to a
        plugin whose metadata declares that capability (every SDK plugin does).
        """
        h = cls(Path(tempfile.mkdtemp(prefix="toru-h-", dir="/tmp")), KvDouble(kv_data))
        h.binary_bodies = binary_bodies
        penv = dict(os.environ)
        penv.update(env or {})
        penv.update(
            TORU_PLUGIN_SOCKET=h.socket_path,
            TORU_INSTANCE_ID=instance_id,
            TORU_KV_FD=str(h.kv_double.plugin_fd),
        )
        penv.setdefault("TORU_PLUGIN_ID", Path(path).name.removesuffix(".binary"))
        try:
            with (
                open(h.workdir / "stdout.log", "wb") as out,
                open(h.workdir / "stderr.log", "wb") as err,
            ):
                h.process = subprocess.Popen(
                    [os.path.abspath(path), *args],  # "./x.binary" is that file, not PATH
                    env=penv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    pass_fds=(h.kv_double.plugin_fd,),
                    start_new_session=True,
                )
            h.kv_double.plugin_sock.close()  # the child holds it now; EOF reaches us if it dies
            h.kv_double.start()
            h._wait_for_socket(start_timeout)
            h._connect(init, instance_id)
        except BaseException:
            h.close()
            raise
        return h

    @classmethod
    def in_process(
        cls,
        plugin: ToruPlugin,
        *,
        instance_id: str = "test-instance",
        config: dict[str, Any] | None = None,
        kv_data: dict[str, str] | None = None,
        init: bool = True,
        start_timeout: float = 5.0,
        binary_bodies: bool = True,
    ) -> PluginHarness:
        """Serve an SDK plugin from an event loop in a background thread and connect
        (bodies in binary frames by default, as the host sends them to SDK plugins)."""
        from .runtime import PluginServer

        h = cls(Path(tempfile.mkdtemp(prefix="toru-h-", dir="/tmp")), KvDouble(kv_data))
        h.binary_bodies = binary_bodies
        kv_fd = h.kv_double.release_plugin_end()
        h.kv_double.start()
        started = threading.Event()
        failure: list[BaseException] = []

        async def main() -> None:
            h._loop = asyncio.get_running_loop()
            h._server = PluginServer(
                plugin,
                h.socket_path,
                instance_id=instance_id,
                config=config,
                kv_fd=kv_fd,
                watch_parent=False,
            )
            try:
                await h._server.start()
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            started.set()
            h.returncode = await h._server.wait()

        h._thread = threading.Thread(
            target=lambda: asyncio.run(main()), name="plugin-under-test", daemon=True
        )
        h._thread.start()
        if not started.wait(start_timeout) or failure:
            h.close()
            raise HarnessError(f"plugin did not start: {failure[0] if failure else 'timeout'}")
        try:
            h._connect(init, instance_id)
        except BaseException:
            h.close()
            raise
        return h

    # ------------------------------------------------------------------ plumbing

    def _wait_for_socket(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(self.socket_path):
                return
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(
                    f"plugin exited with {self.process.returncode} before listening:\n{self.stderr[-2000:]}"
                )
            time.sleep(0.01)
        raise HarnessError(f"plugin did not create {self.socket_path} within {timeout:g} s")

    def _connect(self, init: bool, instance_id: str) -> None:
        self._channel = Channel(self.connect())
        if init:
            self.send(
                lifecycle_init(instance_id, self.socket_path, str(self.workdir / "plugin.log"))
            )

    def connect(self, timeout: float = 5.0) -> socket.socket:
        """A new raw connection to the plugin's socket (blocking, with ``timeout``)."""
        return connect_unix(self.socket_path, timeout)

    def send(self, msg: dict[str, Any], body: bytes | None = None) -> None:
        """Send one message on the harness connection (its reply, if it carries a
        ``request_id``, is kept for ``wait_reply``); ``body`` makes it a binary frame."""
        channel = self._ready_channel()
        rid = msg.get("request_id")
        if rid is not None:
            channel.expect(str(rid))
        channel.send(msg, body=body)

    def read(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next message from the plugin (``None`` on EOF)."""
        return self._ready_channel().read(timeout)

    def _ready_channel(self) -> Channel:
        assert self._channel is not None, "not connected"
        return self._channel

    def _rid(self) -> str:
        return "t" + self._ready_channel().next_id()

    def wait_reply(self, rid: str, timeout: float = 5.0) -> dict[str, Any]:
        """The reply carrying ``request_id == rid``; other replies are kept for their callers."""
        try:
            return self._ready_channel().reply(rid, timeout)
        except TimeoutError:
            raise HarnessError(f"no reply to request {rid} within {timeout:g} s") from None
        except EOFError:
            raise HarnessError(f"plugin closed the connection before answering {rid}") from None

    def _http_message(
        self,
        rid: str,
        method: str,
        path: str,
        body: bytes | str | None,
        json: Any,
        headers: dict[str, str] | None,
    ) -> tuple[dict[str, Any], bytes | None]:
        """The request message and, with ``binary_bodies``, the body for its binary frame."""
        h = dict(headers or {})
        if json is not None:
            body = _json.dumps(json)
            h.setdefault("Content-Type", "application/json")
        data = body.encode() if isinstance(body, str) else (body or b"")
        req = HttpRequest(method.upper(), path, h, data)
        if self.binary_bodies:
            return http_request_message(rid, req, binary=True), data
        return http_request_message(rid, req), None

    @staticmethod
    def _reply(rid: str, msg: dict[str, Any]) -> Reply:
        resp = validate_http_reply(parse_message(msg).payload, frame_body(msg))
        return Reply(resp.status, resp.headers, bytes(resp.body_bytes), rid, msg)

    # ------------------------------------------------------------------ public API

    def request(
        self,
        method: str,
        path: str,
        body: bytes | str | None = None,
        *,
        json: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 5.0,
    ) -> Reply:
        """Send an ``http`` request (path below the plugin's route) and wait for its reply."""
        rid = self._rid()
        self.send(*self._http_message(rid, method, path, body, json, headers))
        return self._reply(rid, self.wait_reply(rid, timeout))

    def pipeline(self, requests: list[tuple[str, str]], timeout: float = 5.0) -> list[Reply]:
        """Send several ``(method, path)`` requests at once; replies in request order."""
        channel = self._ready_channel()
        rids = []
        frames = []
        for method, path in requests:
            rid = self._rid()
            rids.append(rid)
            msg, body = self._http_message(rid, method, path, None, None, None)
            frames.append(encode(msg, body=body))
            channel.expect(rid)
        channel.send_bytes(b"".join(frames))
        return [self._reply(rid, self.wait_reply(rid, timeout)) for rid in rids]

    def kv_request(
        self, action: str, key: str = "", value: str | None = None, timeout: float = 5.0
    ) -> Any:
        """A host->plugin ``kv`` message (the plugin's ``handle_kv``); returns the value."""
        rid = self._rid()
        self.send(kv_request_message(rid, KvOp(action, key, value)))
        return parse_kv_result(parse_message(self.wait_reply(rid, timeout)).payload)

    @property
    def kv(self) -> dict[str, str]:
        """The plugin's KV namespace as the host's store holds it (a live dict)."""
        return self.kv_double.store

    @property
    def stderr(self) -> str:
        """What a subprocess plugin wrote on stderr so far."""
        try:
            return (self.workdir / "stderr.log").read_text(errors="replace")
        except OSError:
            return ""

    def logs(self) -> list[dict[str, Any]]:
        """The structured (JSON) log lines a subprocess plugin wrote on stderr."""
        out = []
        for line in self.stderr.splitlines():
            with contextlib.suppress(ValueError):
                obj = _json.loads(line)
                if isinstance(obj, dict):
                    out.append(obj)
        return out

    def shutdown(self, timeout: float = 5.0) -> int | None:
        """Send ``shutdown`` and wait for the plugin to stop; returns its exit code."""
        with contextlib.suppress(OSError, AssertionError):
            self.send(lifecycle_shutdown())
        deadline = time.monotonic() + timeout
        if self.process is not None:
            try:
                self.returncode = self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                raise HarnessError(f"plugin still running {timeout:g} s after shutdown") from None
        elif self._thread is not None:
            self._thread.join(max(0.0, deadline - time.monotonic()))
            if self._thread.is_alive():
                raise HarnessError(f"plugin still running {timeout:g} s after shutdown")
        return self.returncode

    def close(self) -> None:
        """Stop the plugin (politely, then by force) and remove the temp dir. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(HarnessError):
                self.shutdown(5.0)
            if self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        if self.process is not None:
            self.returncode = self.process.returncode
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # anything the plugin left behind
        if self._thread is not None and self._thread.is_alive():
            if self._server is not None and self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._server.stop, 0, "harness closed")
            self._thread.join(5)
        if self._channel is not None:
            self._channel.close()
        self.kv_double.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PluginHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
