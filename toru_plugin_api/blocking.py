"""The one blocking adapter of the protocol: a framed socket with request/reply by id.

For callers without an event loop: the CLI's control client, the conformance checker and
the test harness. Same codec (``Decoder``) and same bookkeeping (``endpoint.Pending``) as
the asyncio base, so "read frames until the reply with my id" is written once::

    ch = Channel.connect("/path/p.sock", timeout=5)
    reply = ch.request({"type": "http", "payload": {...}}, timeout=5)  # sets msg["request_id"]

``request`` = ``next_id`` + ``expect`` + ``send`` + ``reply``; callers that choose their own
ids or pipeline several requests use those four directly. A reply to another pending
request read on the way is kept until its ``reply()``; a message that answers nothing
pending (unknown or already abandoned id) is dropped. ``read()`` is the raw next message.

Errors: ``TimeoutError`` when the deadline passes (the request is abandoned: a late reply is
dropped), ``EOFError`` when the peer closed, ``ProtocolError`` on a bad frame (close the
channel: the stream cannot be trusted), ``OSError`` from the socket.

PERF: deadlines are kernel socket timeouts (``SO_RCVTIMEO``/``SO_SNDTIMEO``, re-set only when
the value changes), so a call is one ``sendall`` + one ``recv`` instead of poll + recv.
"""

from __future__ import annotations

import collections
import errno
import math
import os
import selectors
import socket
import struct
import time
from typing import Any

from .codec import DEFAULT_MAX_FRAME, Decoder, ProtocolError, encode
from .endpoint import Pending, reply_key

__all__ = ["RECV_SIZE", "Channel", "connect_unix", "kernel_timeout"]

# PERF: 64 KiB stays under glibc's mmap threshold; a 256 KiB recv buffer cost an mmap +
# mremap + munmap (and fresh page faults) on every call, ~70 µs of the sequential
# supervisor hop (strace; A/B p50 280 -> 210 µs).
RECV_SIZE = 65536


def kernel_timeout(sock: socket.socket, option: int, seconds: float) -> None:
    """Set ``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket: an expired wait raises
    ``BlockingIOError``. PERF: no poll() before each recv, unlike ``settimeout``."""
    sec = int(seconds)
    sock.setsockopt(socket.SOL_SOCKET, option, struct.pack("ll", sec, int((seconds - sec) * 1e6)))


def connect_unix(path: str, timeout: float, *, retry_refused: bool = False) -> socket.socket:
    """A connected blocking Unix socket, the connect bounded by ``timeout``.

    A missing or refused socket raises ``OSError`` at once, unless ``retry_refused`` (a
    plugin that binds before it listens has a short window where connect() is refused;
    the host and the harness retry it until ``timeout``). A full listen backlog is waited
    for, up to ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            err = sock.connect_ex(path)
            if err in (errno.EAGAIN, errno.EINPROGRESS):  # listen backlog full: wait a bit
                with selectors.DefaultSelector() as sel:
                    sel.register(sock, selectors.EVENT_WRITE)
                    ready = sel.select(max(0.0, deadline - time.monotonic()))
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ready else err
            if err:
                raise OSError(err, os.strerror(err), path)
        except OSError as exc:
            sock.close()
            again = exc.errno in (errno.ECONNREFUSED, errno.ENOENT)
            if not (retry_refused and again) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
            continue
        sock.setblocking(True)  # timeouts come from SO_RCVTIMEO/SO_SNDTIMEO
        return sock


class Channel:
    """A blocking framed connection with requests matched by id (see the module docstring).

    Not thread-safe: one channel per thread.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        id_field: str = "request_id",
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        sock.settimeout(None)  # blocking; deadlines are kernel timeouts
        self.sock = sock
        self.id_field = id_field
        self.max_frame = max_frame
        self.decoder = Decoder(max_frame)
        self.pending = Pending()
        self._inbox: collections.deque[Any] = collections.deque()
        self._ready: dict[str, Any] = {}
        self._rcvtimeo = self._sndtimeo = -1.0

    @classmethod
    def connect(
        cls, path: str, timeout: float, *, retry_refused: bool = False, **kwargs: Any
    ) -> Channel:
        """Connect to a Unix socket (see ``connect_unix``); other keyword arguments are the
        channel's."""
        return cls(connect_unix(path, timeout, retry_refused=retry_refused), **kwargs)

    def close(self) -> None:
        """Close the socket (idempotent); whatever was pending is abandoned."""
        self.sock.close()
        self.pending.drain()
        self._inbox.clear()
        self._ready.clear()

    # ------------------------------------------------------------------ sending

    def send(self, msg: Any, timeout: float | None = None, body: bytes | None = None) -> None:
        """Encode and send one message, in a binary frame carrying ``body`` when given
        (``FrameTooLarge`` before anything is sent)."""
        self.send_bytes(encode(msg, self.max_frame, body), timeout)

    def send_bytes(self, data: bytes, timeout: float | None = None) -> None:
        """Send raw bytes (one or more frames, or deliberately broken ones in tests)."""
        self._timeo(socket.SO_SNDTIMEO, timeout)
        try:
            self.sock.sendall(data)
        except BlockingIOError:  # EAGAIN after SO_SNDTIMEO
            raise TimeoutError("timed out sending") from None

    # ------------------------------------------------------------------ requests

    def next_id(self) -> str:
        return self.pending.next_id()

    def expect(self, rid: str) -> None:
        """Keep the reply to ``rid`` when it arrives (before sending a request)."""
        self.pending.add(rid, math.inf, _no_callback)

    def request(self, msg: dict[str, Any], timeout: float) -> Any:
        """Send ``msg`` as a request (its id set in ``msg[id_field]``) and return the reply."""
        rid = msg[self.id_field] = self.next_id()
        frame = encode(msg, self.max_frame)
        self.expect(rid)
        try:
            self.send_bytes(frame, timeout)
        except BaseException:
            self.pending.take(rid)
            raise
        return self.reply(rid, timeout)

    def reply(self, rid: str, timeout: float) -> Any:
        """The message answering ``rid`` (which must be ``expect``ed), within ``timeout``.

        On ``TimeoutError`` the request is abandoned: its late reply will be dropped.
        """
        ready = self._ready
        deadline = time.monotonic() + timeout
        first = True
        while True:
            if ready:
                msg = ready.pop(rid, None)
                if msg is not None:
                    return msg
            inbox = self._inbox
            while inbox:
                msg = inbox.popleft()
                key = reply_key(msg.get(self.id_field)) if type(msg) is dict else None
                if key is None or self.pending.take(key) is None:
                    continue  # answers nothing pending
                if key == rid:
                    return msg
                ready[key] = msg
            # PERF: the first read waits the whole timeout (usually unchanged since the
            # last call: no setsockopt); later reads of a long reply wait what is left.
            left = timeout if first else deadline - time.monotonic()
            first = False
            if left <= 0 or not self._fill(left):
                self.pending.take(rid)
                raise TimeoutError(
                    f"no reply with {self.id_field} {rid!r} within {timeout:g} s"
                ) from None

    def read(self, timeout: float | None) -> Any | None:
        """The next message in arrival order, whatever it answers; ``None`` on a clean EOF.

        Raises ``TimeoutError`` when nothing arrives within ``timeout`` (``None``: waits).
        """
        if not self._inbox:
            try:
                if not self._fill(timeout):
                    raise TimeoutError(f"nothing received within {timeout} s")
            except EOFError:
                return None
        return self._inbox.popleft()

    def wait_closed(self, timeout: float) -> bool:
        """True when the peer closes the connection within ``timeout`` (data is dropped)."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._fill(left):
                    return False
                self._inbox.clear()
        except (EOFError, ProtocolError, OSError):
            return True

    # ------------------------------------------------------------------ reading

    def _fill(self, timeout: float | None) -> bool:
        """One read into the inbox: False on timeout; EOFError when the peer closed."""
        self._timeo(socket.SO_RCVTIMEO, timeout)
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:  # EAGAIN: SO_RCVTIMEO expired
            return False
        if not data:
            if self.decoder.buffered:
                raise ProtocolError("connection closed in the middle of a frame")
            raise EOFError("the peer closed the connection")
        try:
            self._inbox.extend(self.decoder.feed(data))
        except ProtocolError as exc:
            self._inbox.extend(exc.decoded)
            raise
        return True

    def _timeo(self, option: int, seconds: float | None) -> None:
        """Set a kernel socket timeout (ms resolution; ``None`` waits forever) if it
        differs from the current one."""
        seconds = 0.0 if seconds is None else max(0.001, round(seconds, 3))
        current = self._rcvtimeo if option == socket.SO_RCVTIMEO else self._sndtimeo
        if abs(current - seconds) < 0.0005:
            return
        kernel_timeout(self.sock, option, seconds)
        if option == socket.SO_RCVTIMEO:
            self._rcvtimeo = seconds
        else:
            self._sndtimeo = seconds


def _no_callback(reply: Any, err: Any) -> None:
    """The blocking channel keeps replies itself; ``Pending`` entries need a callable."""
