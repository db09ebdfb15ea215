"""The one framing codec of Toru: 4-byte big-endian length + UTF-8 JSON (+ a raw body).

A *text frame* is the length and one JSON object. A *binary frame* (the ``binary_bodies``
capability, docs/plugins/PROTOCOL.md section 3) has the top bit of the length set and
carries the message's body as raw bytes after its JSON: ``length | BINARY_FLAG``, a 4-byte
length of the JSON, the JSON, then the body (the rest of the frame). Every ``Decoder``
reads both; only peers that asked for binary bodies are sent binary frames. A decoded
binary frame is the JSON object with the body (``bytes``) under ``BODY`` (``parse=True``),
or the pair ``(json_bytes, body)`` (``parse=False``).

Host (supervisor), worker client and SDK all import this module, so the wire format is
written exactly once. The codec itself does no I/O: ``encode`` makes bytes and ``Decoder``
turns fed bytes into messages. The adapters on top are ``toru_plugin_api.aio`` (asyncio) and
``toru_plugin_api.blocking`` (sockets, with request/reply by id); ``FrameReader`` and
``write_frame`` are the minimal blocking pair for one-message-at-a-time scripts.

The maximum frame size is checked against the 4-byte header *before* any payload is
buffered, so a hostile length prefix (say 4 GB) costs nothing but the error.
"""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

from .fresh_bytes import fresh_bytes

try:  # PERF: ujson is ~3x faster than json for our small messages; optional for plugins.
    import ujson as _ujson
except ImportError:  # pragma: no cover - exercised by the zipapp examples under python3 -I
    _ujson = None

__all__ = [
    "BINARY_FLAG",
    "BODY",
    "Body",
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "Decoder",
    "FrameReader",
    "FrameTooLarge",
    "ProtocolError",
    "binary_head",
    "dumps",
    "encode",
    "encode_binary",
    "encode_payload",
    "frame_body",
    "loads",
    "write_frame",
]

DEFAULT_MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
_HEADER_SIZE = HEADER.size
BINARY_FLAG = 0x80000000  # in the length word: a binary frame (JSON length, JSON, raw body)
_SIZE_MASK = BINARY_FLAG - 1
_BINARY_HEADER = struct.Struct(">II")  # the length word, then the JSON's length
# Where a decoded binary frame's body goes in its message (no JSON value is ``bytes``).
BODY = "$body"
# PERF: a frame from this size on that arrives in pieces is read in place: a binary frame's
# body into a ``bytes`` of its own (``fresh_bytes``), any other frame into a buffer of its
# size (no regrowing, no copy out: a body is then a view of that buffer).
BIG_FRAME = 256 * 1024
# PERF: each Decoder keeps up to this many big-frame buffers of up to SPARE_MAX bytes and
# receives the next big frame into one nobody holds a view of any more (``_unshared``).
SPARES = 4
SPARE_MAX = 4 * 1024 * 1024
# A big binary frame whose JSON part is at most this long has its body received into a
# ``bytes`` of its own (``Decoder._start_body``); the JSON of an http message is far smaller.
HEAD_MAX = 64 * 1024
# A binary frame's body: bytes-like, or a list of bytes-like parts written in order.
Body = bytes | bytearray | memoryview | list[bytes | bytearray | memoryview]


class ProtocolError(Exception):
    """A peer sent something that is not a valid protocol v1 frame or message.

    ``decoded`` holds the messages that were decoded from the same chunk before the bad
    frame, so a caller can still answer them before closing the connection.
    """

    def __init__(self, message: str, decoded: list[Any] | None = None) -> None:
        super().__init__(message)
        self.decoded: list[Any] = decoded if decoded is not None else []


class FrameTooLarge(ProtocolError):
    """The length prefix announced more than the configured maximum frame size."""


if _ujson is not None:

    def dumps(obj: Any) -> bytes:
        """Serialize to compact UTF-8 JSON bytes."""
        return _ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False).encode()

    def _loads(data: bytes) -> Any:
        # NOTE: ujson accepts UTF-8-encoded surrogates (b"\xed\xa0\x80"), which are not
        # UTF-8; Python's strict decoder refuses them. PERF: ASCII (most frames, JSON
        # escapes included) cannot hold one, so only other frames pay the extra pass.
        if not data.isascii():
            data.decode("utf-8")
        return _ujson.loads(data)

    _JSON_ERRORS: tuple[type[BaseException], ...] = (ValueError, UnicodeDecodeError)
else:

    def dumps(obj: Any) -> bytes:
        """Serialize to compact UTF-8 JSON bytes."""
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    def _loads(data: bytes) -> Any:
        return json.loads(data.decode("utf-8"))

    _JSON_ERRORS = (ValueError, UnicodeDecodeError)


# TypeError/OverflowError: e.g. huge integers in ujson.
_LOAD_ERRORS = (*_JSON_ERRORS, TypeError, OverflowError)


def loads(data: bytes) -> Any:
    """Parse UTF-8 JSON bytes; anything malformed becomes a ``ProtocolError``."""
    try:
        return _loads(data)
    except _LOAD_ERRORS as exc:
        raise ProtocolError(f"frame is not valid UTF-8 JSON: {exc}") from None


def encode_payload(body: bytes, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """Frame an already serialized JSON payload."""
    size = len(body)
    if size > max_frame:
        raise FrameTooLarge(f"refusing to send a {size}-byte frame (limit {max_frame} bytes)")
    return HEADER.pack(size) + body


def encode(msg: Any, max_frame: int = DEFAULT_MAX_FRAME, body: Body | None = None) -> bytes:
    """Serialize and frame one message; with ``body``, as a binary frame carrying it."""
    if body is None:
        return encode_payload(dumps(msg), max_frame)
    return b"".join(encode_binary(dumps(msg), body, max_frame))


def encode_binary(
    head: bytes, body: Body, max_frame: int = DEFAULT_MAX_FRAME
) -> tuple[bytes | bytearray | memoryview, ...]:
    """A binary frame of serialized JSON ``head`` and a raw ``body`` (bytes-like, or a list
    of bytes-like parts in order: a request body as the server handed it over), as the
    parts to write in order. PERF: the body is not copied here; ``queue_frame(*parts)``
    writes big parts with ``writelines`` and joins only small frames."""
    if type(body) is list:
        size = _HEADER_SIZE + len(head) + sum(map(len, body))
        if size > max_frame:
            raise FrameTooLarge(f"refusing to send a {size}-byte frame (limit {max_frame} bytes)")
        return (_BINARY_HEADER.pack(size | BINARY_FLAG, len(head)), head, *body)
    size = _HEADER_SIZE + len(head) + len(body)  # type: ignore[arg-type]
    if size > max_frame:
        raise FrameTooLarge(f"refusing to send a {size}-byte frame (limit {max_frame} bytes)")
    return _BINARY_HEADER.pack(size | BINARY_FLAG, len(head)), head, body  # type: ignore[return-value]


def binary_head(head: bytes, tail_size: int, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """The start of a binary frame (length words and serialized JSON ``head``) whose tail of
    ``tail_size`` bytes the caller writes after it, in as many parts as it has (the
    control client's ``http`` op: the plugin request's JSON, then the body, not joined)."""
    size = _HEADER_SIZE + len(head) + tail_size
    if size > max_frame:
        raise FrameTooLarge(f"refusing to send a {size}-byte frame (limit {max_frame} bytes)")
    return _BINARY_HEADER.pack(size | BINARY_FLAG, len(head)) + head


def frame_body(msg: Any) -> bytes | None:
    """The raw body of a message decoded from a binary frame (``bytes``, or a
    ``memoryview`` of a big frame's buffer), else None (a JSON text frame cannot fake one:
    no JSON value is bytes-like)."""
    body = msg.get(BODY) if type(msg) is dict else None
    return body if type(body) is bytes or type(body) is memoryview else None


class Decoder:
    """Incremental frame decoder: ``feed(bytes) -> list of messages``.

    With ``parse=False`` it returns each frame's raw payload bytes instead, for relays that
    route on a little of the message and forward the rest untouched.
    """

    __slots__ = (
        "_big",
        "_body",
        "_buf",
        "_failed",
        "_fill",
        "_head",
        "_spares",
        "max_frame",
        "parse",
    )

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, *, parse: bool = True) -> None:
        self.max_frame = max_frame
        self.parse = parse
        self._buf = bytearray()
        self._failed: ProtocolError | None = None
        # The incomplete big frame: where its rest goes and how much of that is there. Either
        # the whole frame, length word included (``_head`` None), or, for a binary frame, the
        # storage of ``_body`` (a ``fresh_bytes`` object) after its JSON ``_head`` was read.
        self._big: memoryview | None = None
        self._fill = 0
        self._head: bytes | None = None
        self._body: bytes | None = None
        self._spares: list[bytearray] = []  # buffers big frames were received into

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (0 at a frame boundary)."""
        if self._big is None:
            return len(self._buf)
        head = self._head
        return len(self._buf) + self._fill + (0 if head is None else 2 * _HEADER_SIZE + len(head))

    @property
    def receiving_big(self) -> bool:
        """A big frame is incomplete: its rest can be received into ``big_view()``."""
        return self._big is not None

    def big_view(self) -> memoryview | None:
        """Where the rest of an incomplete big frame goes, for a reader that can receive
        into it (``recv_into``, asyncio's ``BufferedProtocol``); None when there is none."""
        big = self._big
        return None if big is None else big[self._fill :]

    def filled(self, count: int) -> list[Any]:
        """``count`` bytes were received into ``big_view()``: the big frame's message once it
        is complete (``feed`` semantics, without a copy)."""
        big = self._big
        assert big is not None, "filled() without a big_view()"
        self._fill += count
        if self._fill < len(big):
            return []
        return [self._complete()]

    def _complete(self) -> Any:
        """The message of the big frame just completed (its state cleared first)."""
        big, head, body = self._big, self._head, self._body
        self._big = self._head = self._body = None
        if head is None:
            return self._whole(big)  # type: ignore[arg-type]
        return self._message(head, body)  # type: ignore[arg-type]

    def _start_body(
        self, view: bytes | bytearray, pos: int, end_all: int, size: int, head_size: int
    ) -> bool:
        """PERF: receive the body of the binary frame at ``pos`` (``size`` bytes after its
        length word, ``end_all - pos`` of them here, ``head_size`` its JSON's length)
        straight into a ``bytes`` of its own (``fresh_bytes``): handed on as it is, nobody
        downstream copies it again. False when that cannot be done (no fresh bytes here, a
        JSON part that is not small or lies about its length: the whole-frame buffer then
        takes it, and its checks)."""
        body_size = size - _HEADER_SIZE - head_size
        if head_size > HEAD_MAX or body_size < 0:
            return False
        fresh = fresh_bytes(body_size)
        if fresh is None:
            return False
        start = pos + 2 * _HEADER_SIZE + head_size
        with memoryview(view) as mv:
            head = bytes(mv[pos + 2 * _HEADER_SIZE : start])
            self._body, big = fresh
            big[: end_all - start] = mv[start:end_all]
        self._big, self._head, self._fill = big, head, end_all - start
        return True

    def _buffer(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes for a big frame.

        PERF: ``bytearray(size)`` zero-fills memory that is about to be overwritten: in a
        profile of the supervisor relaying 1 MiB answers, that memset of cold memory was
        15% of its CPU. So a buffer no view points into any more is received into again.
        """
        spares = self._spares
        for buf in spares:
            if len(buf) >= size and _unshared(buf):
                return memoryview(buf)[:size]
        buf = bytearray(size)
        if size <= SPARE_MAX:
            if len(spares) >= SPARES:
                spares.pop(0)
            spares.append(buf)
        return memoryview(buf)

    def _feed_big(self, big: memoryview, data: bytes) -> list[Any]:
        """Fill the big frame's buffer; once complete, decode it and go on with the rest."""
        fill = self._fill
        need = len(big) - fill
        if len(data) < need:
            big[fill : fill + len(data)] = data
            self._fill = fill + len(data)
            return []
        with memoryview(data) as mv:
            big[fill:] = mv[:need]
        rest = data[need:]
        try:
            out = [self._complete()]
        except ProtocolError:
            self._buf = bytearray(rest)  # the stream is still in step after a bad big frame
            raise
        if rest:
            try:
                out.extend(self.feed(rest))
            except ProtocolError as exc:
                exc.decoded = out + exc.decoded
                raise
        return out

    def _whole(self, big: memoryview) -> Any:
        """The message of the one complete frame in ``big``."""
        (size,) = HEADER.unpack_from(big)
        if size & BINARY_FLAG:
            return self._binary(big, 0, size & _SIZE_MASK, share=True)
        payload = bytes(big[_HEADER_SIZE:])
        if not self.parse:
            return payload
        msg = loads(payload)
        if type(msg) is not dict:
            raise ProtocolError("frame is valid JSON but not a JSON object")
        return msg

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes, return every complete message they finish.

        Raises ``ProtocolError`` on an oversized frame (the stream cannot be resynchronized,
        so every later call raises too) or on a frame that is not a UTF-8 JSON object (that
        frame is skipped; ``err.decoded`` carries the messages before it).
        """
        if self._failed is not None:
            raise self._failed
        if self._big is not None:
            return self._feed_big(self._big, data)
        buf = self._buf
        if not buf and len(data) > _HEADER_SIZE:
            # PERF: the common case, one whole frame per read (a sequential peer): no loop,
            # no slicing of a view; anything else takes the general path below.
            (size,) = HEADER.unpack_from(data)
            if size == len(data) - _HEADER_SIZE and size <= self.max_frame:  # not binary
                payload = data[_HEADER_SIZE:]
                if not self.parse:
                    return [payload]
                try:
                    msg = _loads(payload)
                except _LOAD_ERRORS as exc:
                    raise ProtocolError(f"frame is not valid UTF-8 JSON: {exc}", []) from None
                if type(msg) is not dict:
                    raise ProtocolError("frame is valid JSON but not a JSON object", [])
                return [msg]
            if size & BINARY_FLAG:  # the same for one whole binary frame (a small body)
                size &= _SIZE_MASK
                if size == len(data) - _HEADER_SIZE and size <= self.max_frame:
                    return [self._binary(data, 0, size)]
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data  # PERF: the common case, a chunk holding whole frames, copies nothing.
        out: list[Any] = []
        pos = 0
        end_all = len(view)
        max_frame = self.max_frame
        parse = self.parse
        while end_all - pos >= _HEADER_SIZE:
            (size,) = HEADER.unpack_from(view, pos)
            binary = size & BINARY_FLAG
            if binary:
                size &= _SIZE_MASK
            if size > max_frame:
                self._failed = FrameTooLarge(
                    f"frame length {size} exceeds the maximum frame size of {max_frame} bytes",
                    out,
                )
                self._buf = bytearray()
                raise self._failed
            end = pos + _HEADER_SIZE + size
            if end > end_all:
                if size >= BIG_FRAME and binary:  # PERF: the body into bytes of its own
                    have = end_all - pos
                    if have < 2 * _HEADER_SIZE:
                        break  # not even its JSON length yet: wait, as for any frame
                    (head_size,) = HEADER.unpack_from(view, pos + _HEADER_SIZE)
                    if head_size <= HEAD_MAX and have < 2 * _HEADER_SIZE + head_size:
                        break  # its JSON is not all here yet
                    if self._start_body(view, pos, end_all, size, head_size):
                        pos = end_all
                        break
                if size >= BIG_FRAME:  # PERF: read the rest into a buffer of its own size
                    big = self._big = self._buffer(_HEADER_SIZE + size)
                    with memoryview(view) as mv:
                        big[: end_all - pos] = mv[pos:end_all]
                    self._fill = end_all - pos
                    pos = end_all
                break
            if binary:
                start = pos
                pos = end
                try:
                    out.append(self._binary(view, start, size))
                except ProtocolError as exc:
                    self._keep(view, pos)
                    exc.decoded = out
                    raise
                continue
            if type(view) is bytes:
                payload = view[pos + _HEADER_SIZE : end]
            else:
                with memoryview(view) as mv:  # PERF: a bytearray slice would copy twice
                    payload = bytes(mv[pos + _HEADER_SIZE : end])
            pos = end
            if parse:
                try:
                    msg = _loads(payload)  # PERF: ``loads`` inlined (one call less per frame)
                except _LOAD_ERRORS as exc:
                    self._keep(view, pos)
                    raise ProtocolError(f"frame is not valid UTF-8 JSON: {exc}", out) from None
                if not isinstance(msg, dict):
                    self._keep(view, pos)
                    raise ProtocolError("frame is valid JSON but not a JSON object", out)
                out.append(msg)
            else:
                out.append(payload)
        self._keep(view, pos)
        return out

    def _binary(
        self, view: bytes | bytearray | memoryview, pos: int, size: int, share: bool = False
    ) -> Any:
        """The binary frame of ``size`` bytes after the length word at ``pos`` (complete).

        ``share``: ``view`` is a big frame's own buffer, so the body is a view of it (no copy).
        """
        if size < _HEADER_SIZE:
            raise ProtocolError(f"binary frame of {size} bytes has no room for its JSON length")
        (head_size,) = HEADER.unpack_from(view, pos + _HEADER_SIZE)
        if head_size > size - _HEADER_SIZE:
            raise ProtocolError(
                f"binary frame declares a {head_size}-byte JSON header but holds only"
                f" {size - _HEADER_SIZE} bytes after it"
            )
        start = pos + 2 * _HEADER_SIZE
        end = pos + _HEADER_SIZE + size
        body: bytes | memoryview
        if share:
            mv = memoryview(view)
            head = bytes(mv[start : start + head_size])
            body = mv[start + head_size : end]
        else:
            with memoryview(view) as mv:  # PERF: a bytearray slice would copy twice
                head = bytes(mv[start : start + head_size])
                body = bytes(mv[start + head_size : end])  # the one copy
        return self._message(head, body)

    def _message(self, head: bytes, body: bytes | memoryview) -> Any:
        """A binary frame's message from its JSON ``head`` and raw ``body``."""
        if not self.parse:
            return head, body
        msg = loads(head)
        if type(msg) is not dict:
            raise ProtocolError("binary frame's JSON is not a JSON object")
        msg[BODY] = body
        return msg

    def _keep(self, view: bytes | bytearray, pos: int) -> None:
        if view is self._buf:
            if pos:
                del self._buf[:pos]
        elif pos < len(view):
            self._buf = bytearray(view[pos:])


def _unshared(buf: bytearray) -> bool:
    """No view of ``buf`` is alive (a body handed on was dropped or copied): a bytearray
    with live exports cannot be resized, so a pop that does not raise proves it."""
    try:
        last = buf.pop()
    except BufferError:
        return False
    buf.append(last)  # PERF: within the allocation: no realloc, no copy
    return True


class FrameReader:
    """Blocking reader of messages from a socket, on top of ``Decoder``."""

    def __init__(
        self, sock: socket.socket, max_frame: int = DEFAULT_MAX_FRAME, *, parse: bool = True
    ) -> None:
        self.sock = sock
        self.decoder = Decoder(max_frame, parse=parse)
        self._pending: list[Any] = []

    def read(self) -> Any | None:
        """Next message, or ``None`` on a clean EOF at a frame boundary.

        Honours the socket's timeout (``socket.timeout`` propagates). An EOF inside a frame
        raises ``ProtocolError``.
        """
        while not self._pending:
            data = self.sock.recv(65536)  # PERF: below glibc's mmap threshold (no mmap per read)
            if not data:
                if self.decoder.buffered:
                    raise ProtocolError("connection closed in the middle of a frame")
                return None
            self._pending = self.decoder.feed(data)
        return self._pending.pop(0)


def write_frame(sock: socket.socket, msg: Any, max_frame: int = DEFAULT_MAX_FRAME) -> None:
    """Encode and send one message on a blocking socket."""
    sock.sendall(encode(msg, max_frame))
