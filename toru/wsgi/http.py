"""Request plumbing shared by the resources: who the client is, JSON bodies, body limits.

Everything here reads Falcon's ASGI request (``req.scope`` and its headers). The client's
address, scheme and host come from ``X-Forwarded-*`` only when the direct peer is a trusted
proxy (``http.trusted_proxies``; ``unix`` means a Unix-socket peer such as nginx on the same
host; by default only that, and only when Toru is bound to a Unix socket: toru/config.py
``default_trusted_proxies``); otherwise from the connection itself. The scope's scheme is
the transport's own: gunicorn is told to believe no forwarding header (gunicorn_conf.py),
so this module is the one place that decides.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, NamedTuple

import falcon
import falcon.asgi
import ujson

from ..errors import BadRequest, PayloadTooLarge, ToruError

log = logging.getLogger("toru.wsgi")
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


def client_info(req: falcon.asgi.Request, trusted: frozenset[str]) -> ClientInfo:
    """Resolve the client per the trusted-proxy rules; cached on ``req.context``."""
    context = req.context
    cached = context.get("client")
    if cached is not None:
        return cached
    scope = req.scope
    client = scope.get("client")
    if client is not None and type(client) is not tuple:  # ASGI allows any iterable pair
        client = tuple(client)
    peer = client[0] if client and client[0] else "unix"
    scheme = scope.get("scheme") or "http"
    host = req.get_header("Host")
    if not host:
        server = scope.get("server")
        host = server[0] if server and server[0] else "localhost"
    if peer in trusted:
        xff = req.get_header("X-Forwarded-For")
        chain = [p.strip() for p in xff.split(",") if p.strip()] if xff else []
        # The client is the right-most address that is not itself a trusted proxy.
        ip = peer
        for hop in reversed(chain):
            ip = hop
            if hop not in trusted:
                break
        if peer != "unix":
            chain.append(peer)
        proto = req.get_header("X-Forwarded-Proto")
        if proto:
            proto = proto.split(",")[0].strip().lower()
            if proto in ("http", "https"):
                scheme = proto
        fhost = req.get_header("X-Forwarded-Host")
        if fhost:
            host = fhost.split(",")[0].strip() or host
        info = ClientInfo(peer, ip, scheme, host, ", ".join(chain), bool(xff) or peer == "unix")
    else:
        # NOTE: an untrusted Unix-socket peer has no address to pass on.
        info = ClientInfo(peer, peer, scheme, host, "" if peer == "unix" else peer, False)
        if not _ignored_forwarding[0] and req.get_header("X-Forwarded-For"):
            _warn_ignored_forwarding(peer)
    context.client = info
    return info


# NOTE: a proxy that Toru does not trust (a TCP nginx after the default changed) would make
# every client one address for the login limit; say so once per worker, with the fix.
_ignored_forwarding = [False]


def _warn_ignored_forwarding(peer: str) -> None:
    _ignored_forwarding[0] = True
    log.warning(
        "ignoring X-Forwarded-For from %s: it is not in http.trusted_proxies. If it is your"
        " reverse proxy, name it there (TORU_TRUSTED_PROXIES=%s), else every client behind"
        " it counts as one address (logged once per worker)",
        peer,
        peer,
    )


async def read_body(req: falcon.asgi.Request, limit: int, timeout: float) -> bytes:
    """The whole request body as one ``bytes`` (``read_body_parts``, joined)."""
    parts = await read_body_parts(req, limit, timeout)
    return parts[0] if len(parts) == 1 else b"".join(parts)


async def read_body_parts(req: falcon.asgi.Request, limit: int, timeout: float) -> list[bytes]:
    """The whole request body as the chunks the server handed over, at most ``limit``
    bytes, within ``timeout`` seconds.

    PERF: not joined: the proxy writes the chunks on as the tail of one binary frame
    (``writelines``), so a 1 MiB body is not copied once more in the worker.

    413 beyond the limit (checked against Content-Length before reading, and as a chunked
    body grows); 408 when the body takes longer than ``timeout`` (a slow or stalled client:
    gunicorn then closes the connection, since the body was not read to its end); 400 when it
    ends before its Content-Length (the client disconnected).
    """
    length = req.content_length
    if length is None and req.get_header("Transfer-Encoding") is None:
        # PERF: no Content-Length and no chunked coding means no body (RFC 9112 6.3).
        return []
    if length is not None and length > limit:
        raise PayloadTooLarge(f"request body of {length} bytes exceeds the limit of {limit} bytes")
    if length == 0:
        return []
    try:
        async with asyncio.timeout(timeout):
            parts, size = await _read_up_to(req.stream, limit)
    except TimeoutError:
        raise ToruError(
            f"the request body did not arrive within {timeout:g} s",
            code="request_timeout",
            status=408,
        ) from None
    if length is not None and size < length:
        raise BadRequest(
            f"request body ended after {size} of {length} bytes", code="incomplete_body"
        )
    return parts


async def _read_up_to(stream: Any, limit: int) -> tuple[list[bytes], int]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return chunks, size


async def read_json(req: falcon.asgi.Request, limit: int, timeout: float) -> dict[str, Any]:
    """The body as a JSON object; anything else is a 400 that says what was wrong."""
    data = await read_body(req, limit, timeout)
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


def query_int(req: falcon.asgi.Request, name: str, default: int, lo: int, hi: int) -> int:
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
