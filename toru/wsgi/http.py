"""Request plumbing shared by the resources: who the client is, JSON bodies, body limits.

The client's address, scheme and host come from ``X-Forwarded-*`` only when the direct peer
is a trusted proxy (``http.trusted_proxies``; ``unix`` means a Unix-socket peer such as
nginx on the same host); otherwise from the connection itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import falcon
import ujson

from ..errors import BadRequest, PayloadTooLarge

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


class ClientInfo(NamedTuple):
    """Where a request came from, after applying the trusted-proxy rules.

    PERF: a NamedTuple, built in ~0.3 µs where a frozen dataclass took ~1.5 µs.
    """

    peer: str  # the direct peer: an IP, or "unix"
    ip: str  # the client as far as we can trust the chain
    scheme: str
    host: str
    forwarded_for: str  # X-Forwarded-For to send on (chain + peer); "" if unknown
    via_proxy: bool  # a trusted proxy forwarded this request

    @property
    def is_local(self) -> bool:
        """A loopback client talking to us directly (not through a proxy)."""
        return not self.via_proxy and self.peer in LOOPBACK


def client_info(req: falcon.Request, trusted: frozenset[str]) -> ClientInfo:
    """Resolve the client per the trusted-proxy rules; cached on ``req.context``."""
    context = req.context
    cached = context.get("client")
    if cached is not None:
        return cached
    env = req.env
    peer = env.get("REMOTE_ADDR") or "unix"
    scheme = env.get("wsgi.url_scheme", "http")
    host = env.get("HTTP_HOST") or env.get("SERVER_NAME", "localhost")
    if peer in trusted:
        xff = env.get("HTTP_X_FORWARDED_FOR")
        chain = [p.strip() for p in xff.split(",") if p.strip()] if xff else []
        # The client is the right-most address that is not itself a trusted proxy.
        ip = peer
        for hop in reversed(chain):
            ip = hop
            if hop not in trusted:
                break
        if peer != "unix":
            chain.append(peer)
        proto = env.get("HTTP_X_FORWARDED_PROTO")
        if proto:
            proto = proto.split(",")[0].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
        fhost = env.get("HTTP_X_FORWARDED_HOST")
        if fhost:
            host = fhost.split(",")[0].strip() or host
        info = ClientInfo(peer, ip, scheme, host, ", ".join(chain), bool(xff) or peer == "unix")
    else:
        info = ClientInfo(peer, peer, scheme, host, peer, False)
    context.client = info
    return info


def read_body(req: falcon.Request, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes (413 beyond, checked before reading)."""
    env = req.env
    if "HTTP_TRANSFER_ENCODING" not in env and env.get("CONTENT_LENGTH") in (None, "", "0"):
        # PERF: no Content-Length and no chunked coding means no body (RFC 9112 6.3; gunicorn
        # reads it so too); skips Falcon's bounded stream, the common GET.
        return b""
    length = req.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    if length is None:
        # Chunked, no Content-Length: Falcon's bounded stream would read nothing (it is bounded
        # by Content-Length); the server's wsgi.input decodes the chunks and ends at the last.
        data = _read_up_to(env["wsgi.input"], limit + 1)
    else:
        data = req.bounded_stream.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    return data


def _read_up_to(stream: Any, n: int) -> bytes:
    """Up to ``n`` bytes from a WSGI input stream (a ``read(n)`` may return less)."""
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = stream.read(min(left, 65536))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_json(req: falcon.Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; anything else is a 400 that says what was wrong."""
    data = read_body(req, limit)
    if not data.strip():
        raise BadRequest("request body must be a JSON object", code="bad_json")
    try:
        obj = ujson.loads(data)
    except (ValueError, UnicodeDecodeError, OverflowError, TypeError) as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}", code="bad_json") from None
    if not isinstance(obj, dict):
        raise BadRequest("request body must be a JSON object", code="bad_json")
    try:  # "\ud800" escapes parse into lone surrogates, which nothing downstream can encode
        ujson.dumps(obj, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, OverflowError, ValueError):
        raise BadRequest("request body contains invalid Unicode (lone surrogates)", code="bad_json")
    return obj


def field(obj: dict[str, Any], name: str, kind: type | tuple = str, *, required: bool = True):
    """``obj[name]`` checked against ``kind``; 400 naming the field otherwise."""
    if name not in obj or obj[name] is None:
        if required:
            raise BadRequest(f"field {name!r} is required", code="missing_field")
        return None
    value = obj[name]
    if isinstance(value, bool) and kind is not bool:
        raise BadRequest(f"field {name!r} has the wrong type", code="bad_field")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise BadRequest(f"field {name!r} must be of type {names}", code="bad_field")
    return value


def query_int(req: falcon.Request, name: str, default: int, lo: int, hi: int) -> int:
    """An integer query parameter within ``[lo, hi]``; 400 otherwise."""
    raw = req.get_param(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"query parameter {name!r} must be an integer", code="bad_query") from None
    if not lo <= value <= hi:
        raise BadRequest(f"query parameter {name!r} must be in {lo}..{hi}", code="bad_query")
    return value


def send_json(resp: falcon.Response, obj: Any, status: int = 200) -> None:
    """Serialize with ujson directly (PERF: skips the media handler lookup)."""
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = ujson.dumps(obj, ensure_ascii=False, escape_forward_slashes=False).encode()
