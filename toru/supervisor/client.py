"""The worker-side control client: blocking, one per thread, bounded in time.

gunicorn's sync workers call the supervisor through this. Every call is one ``sendall``
and one blocking ``recv`` (more only for a reply larger than one read), matched by ``id``
(stale replies of an abandoned call are skipped). PERF: deadlines are kernel socket
timeouts (``SO_SNDTIMEO``/``SO_RCVTIMEO``, re-set only when the needed value changes), so a
call costs two syscalls instead of send + poll + recv; ``selectors`` bounds the connect.
A dead supervisor shows up as ``SupervisorUnavailable`` (503) quickly: connecting to a
missing or refused socket fails at once, and a broken connection is re-opened once before
giving up (a send that fails with EPIPE never reached the old supervisor, so retrying it
cannot duplicate a request).
"""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toru.errors import SupervisorUnavailable, ToruError
from toru_plugin_api.codec import DEFAULT_MAX_FRAME, Decoder, ProtocolError, dumps, encode_payload
from toru_plugin_api.messages import encode_body, validate_http_reply

__all__ = ["ControlClient", "ProxyResponse", "kernel_timeout", "reply_result"]

RECV_SIZE = 65536

_local = threading.local()


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


def kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """Set ``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket: an expired wait raises
    ``BlockingIOError``. PERF: no poll() before each recv, unlike ``settimeout``."""
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", sec, int((seconds - sec) * 1e6)))


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
        self._sock: socket.socket | None = None
        self._rcvtimeo = -1.0
        self._sndtimeo = -1.0
        self._decoder = Decoder(max_frame)
        self._ready: list[dict[str, Any]] = []
        self._seq = 0

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

    # ------------------------------------------------------------------ connection

    def _connect(self, deadline: float) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            err = sock.connect_ex(self.path)
            if err in (errno.EAGAIN, errno.EINPROGRESS):  # listen backlog full: wait a bit
                sel = selectors.DefaultSelector()
                sel.register(sock, selectors.EVENT_WRITE)
                wait = min(self.connect_timeout, max(0.0, deadline - time.monotonic()))
                ready = sel.select(wait)
                sel.close()
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready else err
            if err:
                raise OSError(err, errno.errorcode.get(err, str(err)))
        except OSError as exc:
            sock.close()
            raise SupervisorUnavailable(
                f"the supervisor is not reachable at {self.path}: {exc.strerror or exc}"
            ) from None
        sock.setblocking(True)  # timeouts come from SO_RCVTIMEO/SO_SNDTIMEO
        self._sock = sock
        self._rcvtimeo = self._sndtimeo = -1.0
        self._decoder = Decoder(self.max_frame)
        self._ready = []

    def close(self) -> None:
        """Drop the connection (idempotent); the next call reconnects."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._ready = []

    def _timeo(self, option: int, seconds: float) -> None:
        """Set a kernel socket timeout (ms resolution) if it differs from the current one."""
        seconds = max(0.001, round(seconds, 3))
        current = self._rcvtimeo if option == socket.SO_RCVTIMEO else self._sndtimeo
        if abs(current - seconds) < 0.0005:
            return
        kernel_timeout(self._sock, option, seconds)  # type: ignore[arg-type]
        if option == socket.SO_RCVTIMEO:
            self._rcvtimeo = seconds
        else:
            self._sndtimeo = seconds

    def _send(self, data: bytes, timeout: float) -> None:
        self._timeo(socket.SO_SNDTIMEO, timeout)
        try:
            self._sock.sendall(data)  # type: ignore[union-attr]
        except BlockingIOError:  # EAGAIN after SO_SNDTIMEO
            raise TimeoutError("timed out sending to the supervisor") from None

    # ------------------------------------------------------------------ calls

    def call(
        self, op: str, args: dict[str, Any] | None = None, timeout: float | None = None
    ) -> Any:
        """Run one operation; its ``result``, or raises the ``ToruError`` it failed with."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._seq += 1
        rid = self._seq
        request = {"v": 1, "id": rid, "op": op, "args": args or {}}
        if op == "http":  # the relayed form (docs/control-protocol.md); older supervisors
            request["reply"] = "message"  # ignore the key and answer with "result"
        frame = encode_payload(dumps(request), self.max_frame)
        for attempt in (0, 1):
            if self._sock is None:
                self._connect(deadline)
            try:
                self._send(frame, timeout)
                break
            except TimeoutError:
                self.close()
                raise SupervisorUnavailable("timed out sending to the supervisor") from None
            except OSError as exc:
                self.close()
                if attempt:
                    raise SupervisorUnavailable(f"lost the supervisor: {exc}") from None
        return reply_result(self._read_reply(rid, timeout, deadline))

    def _read_reply(self, rid: int, timeout: float, deadline: float) -> dict[str, Any]:
        ready = self._ready
        first = True
        while True:
            while ready:
                msg = ready.pop(0)
                if msg.get("id") == rid:
                    return msg
            # The first read waits the call's whole timeout (usually unchanged since the
            # last call: no setsockopt); later reads of a long reply wait what is left.
            remaining = timeout if first else deadline - time.monotonic()
            first = False
            if remaining <= 0:
                self.close()  # a late reply must not be read as the next call's
                raise SupervisorUnavailable("the supervisor did not answer in time")
            self._timeo(socket.SO_RCVTIMEO, remaining)
            try:
                # PERF: 64 KiB stays under glibc's mmap threshold; a 256 KiB recv buffer
                # cost an mmap + mremap + munmap (and fresh page faults) on every call,
                # ~70 µs of the sequential hop (strace; A/B p50 280 -> 210 µs).
                data = self._sock.recv(RECV_SIZE)  # type: ignore[union-attr]
            except BlockingIOError:  # EAGAIN: SO_RCVTIMEO expired
                self.close()
                raise SupervisorUnavailable("the supervisor did not answer in time") from None
            except OSError as exc:
                self.close()
                raise SupervisorUnavailable(f"lost the supervisor: {exc}") from None
            if not data:
                self.close()
                raise SupervisorUnavailable("the supervisor closed the connection")
            try:
                ready.extend(self._decoder.feed(data))
            except ProtocolError as exc:
                self.close()
                raise SupervisorUnavailable(f"bad reply from the supervisor: {exc}") from None

    def http(
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
        result = self.call("http", args, self.http_timeout if timeout is None else timeout)
        try:
            reply = validate_http_reply(result)
        except ProtocolError as exc:
            raise ToruError(str(exc), code="bad_gateway", status=502) from None
        return ProxyResponse(reply.status, reply.headers, reply.body_bytes)
