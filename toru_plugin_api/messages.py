"""Protocol v1 message model: builders and strict parsers for every message type.

Parsers accept the original nesting (``payload.payload`` for http and kv requests) and the
flat form, and are strict about types: anything malformed raises ``ProtocolError`` with a
message that names the field, never ``KeyError``/``TypeError``.

Bodies travel as JSON strings. A body that is not valid UTF-8 is sent base64-encoded with
``"body_encoding": "base64"`` beside it (see docs/plugins/PROTOCOL.md); readers that do not
know the flag only ever see it for binary bodies. With the ``binary_bodies`` capability a
body travels instead as the raw tail of a binary frame (``codec.encode_binary``); the
parsers then take it as their ``body`` argument and the JSON carries no ``body``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from .codec import ProtocolError

__all__ = [
    "BINARY_BODIES",
    "HOST_CAPABILITIES",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "HttpRequest",
    "HttpResponse",
    "KvOp",
    "Message",
    "PluginError",
    "PluginMetadata",
    "ProtocolError",
    "RequestId",
    "BadReply",
    "decode_body",
    "encode_body",
    "http_request_message",
    "http_response_message",
    "kv_request_message",
    "kv_response_message",
    "host_init",
    "lifecycle_init",
    "lifecycle_shutdown",
    "make_message",
    "now_iso",
    "now_iso_bytes",
    "parse_http_request",
    "parse_kv_op",
    "parse_kv_result",
    "parse_message",
    "validate_http_reply",
]

MESSAGE_TYPES = ("lifecycle", "http", "kv")
# The protocol this code speaks, sent in ``init`` and compared with a plugin's ``protocol``.
PROTOCOL_VERSION = 1
# A plugin that lists it in its metadata's ``capabilities`` is sent bodies as the raw tail of
# binary frames (docs/plugins/PROTOCOL.md section 3) and answers those in the same form.
BINARY_BODIES = "binary_bodies"
# What a host offers every plugin, announced in ``init``: "kv" = the TORU_KV_FD channel.
HOST_CAPABILITIES = ("kv", BINARY_BODIES)
ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
KV_ACTIONS = ("get", "set", "delete", "list")


class PluginError(Exception):
    """An error a plugin handler raises to answer with a specific HTTP status."""

    def __init__(self, message: str, status: int = 500, code: str = "plugin_error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


# (millisecond, its timestamp as bytes, as text) and (second, b"YYYY-MM-DDTHH:MM:SS"). Each is
# one tuple, replaced whole, so a thread never sees a torn pair.
_TS_MS: tuple[int, bytes, str] = (0, b"", "")
_TS_SECOND: tuple[int, bytes] = (0, b"")


def _format_ms(ms: int) -> tuple[int, bytes, str]:
    global _TS_MS, _TS_SECOND
    sec = ms // 1000
    second = _TS_SECOND
    if sec != second[0]:
        second = _TS_SECOND = (sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)).encode())
    value = b"%s.%03dZ" % (second[1], ms % 1000)
    cached = _TS_MS = (ms, value, value.decode())
    return cached


def now_iso() -> str:
    """ISO-8601 UTC with milliseconds (``2026-12-01T22:10:57.123Z``): the one timestamp of
    envelopes and log lines, host and SDK alike.

    PERF: formatted at most once per millisecond and strftime at most once per second; a
    sequential peer starts a new millisecond on almost every message (2.5 -> 0.3-0.9 µs).
    """
    ms = int(time.time() * 1000)
    cached = _TS_MS
    return cached[2] if ms == cached[0] else _format_ms(ms)[2]


def now_iso_bytes() -> bytes:
    """``now_iso()`` as ASCII bytes, for envelopes written by concatenation."""
    ms = int(time.time() * 1000)
    cached = _TS_MS
    return cached[1] if ms == cached[0] else _format_ms(ms)[1]


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class PluginMetadata:
    """What ``<binary> --metadata`` prints; validated by DESIGN.md's rules."""

    id: str
    name: str
    version: str
    icon: str = ""
    route: str = ""
    author: str | None = None
    # The plugin accepts several connections on its socket at once and answers each on its
    # own (the SDK always does): the host may then let workers connect to it directly.
    multi_connection: bool = False
    # The protocol version the plugin is written against (absent = 1, the original one).
    protocol: int = 1
    # Optional protocol features the plugin speaks; the host uses those it knows of
    # (``binary_bodies``) and ignores the rest.
    capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ProtocolError("invalid plugin metadata: " + "; ".join(problems))

    def problems(self) -> list[str]:
        out = []
        for name in ("id", "name", "version", "icon", "route"):
            if not isinstance(getattr(self, name), str):
                out.append(f"{name} must be a string")
        if out:
            return out
        if self.author is not None and not isinstance(self.author, str):
            out.append("author must be a string")
        if not isinstance(self.multi_connection, bool):
            out.append("multi_connection must be true or false")
        caps = self.capabilities
        if not isinstance(caps, tuple) or not all(isinstance(c, str) for c in caps):
            out.append(f"capabilities must be a list of strings, got {caps!r}")
        if not ID_RE.match(self.id):
            out.append(f"id must match ^[A-Za-z0-9][A-Za-z0-9-]{{0,63}}$, got {self.id!r}")
        if not self.name or len(self.name) >= 100:
            out.append(f"name must be 1-99 characters, got {len(self.name)}")
        p = self.protocol
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            out.append(f"protocol must be a positive integer, got {p!r}")
        elif p > PROTOCOL_VERSION:
            out.append(f"protocol {p} is newer than this host's ({PROTOCOL_VERSION}): upgrade Toru")
        if isinstance(self.author, str) and len(self.author) >= 100:
            out.append("author must be under 100 characters")
        if not self.version:
            out.append("version must not be empty")
        r = self.route
        if not r.startswith("/") or len(r) < 2:
            out.append(f"route must start with / and name a segment, got {r!r}")
        elif ".." in r or "/" in r[1:] or "\\" in r or "%" in r or "?" in r or "#" in r:
            out.append(
                f"route must be a single segment without '..', '/', '%', '?' or '#', got {r!r}"
            )
        return out

    @classmethod
    def from_json(cls, data: Any) -> PluginMetadata:
        if not isinstance(data, dict):
            raise ProtocolError("invalid plugin metadata: expected a JSON object")
        missing = [k for k in ("id", "name", "version", "route") if k not in data]
        if missing:
            raise ProtocolError("invalid plugin metadata: missing " + ", ".join(missing))
        return cls(
            id=data["id"],
            name=data["name"],
            version=data["version"],
            icon=data.get("icon", "") if data.get("icon") is not None else "",
            route=data["route"],
            author=data.get("author"),
            multi_connection=data.get("multi_connection", False),
            protocol=data.get("protocol", 1),
            capabilities=_capabilities(data.get("capabilities")),
        )

    @property
    def binary_bodies(self) -> bool:
        """The plugin takes and gives bodies as raw bytes in binary frames."""
        return BINARY_BODIES in self.capabilities

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "version": self.version,
            "icon": self.icon,
            "route": self.route,
        }
        if self.author is not None:
            d["author"] = self.author
        if self.multi_connection:
            d["multi_connection"] = True
        if self.protocol != 1:
            d["protocol"] = self.protocol
        if self.capabilities:
            d["capabilities"] = list(self.capabilities)
        return d


def _capabilities(value: Any) -> Any:
    """A metadata ``capabilities`` list as a tuple (absent or null = none); anything else is
    kept as it is for ``problems`` to name."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else value


def metadata_output_json(out: bytes) -> Any:
    """The JSON value ``--metadata`` printed on stdout; a ``ProtocolError`` says what to change.

    Shared by the host's discovery and ``toru plugin check``. The usual mistake is logging to
    stdout: the host reads stdout as the JSON, so the message quotes what else is there.
    """
    text = out.decode("utf-8", "replace").strip()
    if not text:
        raise ProtocolError("--metadata printed nothing on stdout; print the metadata JSON there")
    try:
        return json.loads(text)
    except ValueError:
        raise ProtocolError(f"--metadata did not print one JSON object: {_noise(text)}") from None


def _noise(text: str) -> str:
    """Say what besides the JSON object is on stdout, quoting it."""
    start = text.find("{")
    if start > 0:
        return f"it printed {text[:start].strip()[:80]!r} before the JSON: log to stderr, stdout is for the JSON"
    if start == 0:
        try:
            _, end = json.JSONDecoder().raw_decode(text)
        except ValueError:
            return f"stdout is not valid JSON: {text[:80]!r}"
        after = text[end:].strip()
        return f"it printed {after[:80]!r} after the JSON: log to stderr, stdout is for the JSON"
    return f"stdout began with {text[:80]!r}"


# --------------------------------------------------------------------------- bodies


def encode_body(body: bytes | memoryview | str | None) -> tuple[str, bool]:
    """Body for the wire: (text, is_base64). UTF-8 text travels as is."""
    if body is None:
        return "", False
    if isinstance(body, str):
        return body, False
    try:
        return str(body, "utf-8"), False  # any bytes-like (a big frame's body is a view)
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def decode_body(payload: dict[str, Any], where: str) -> bytes:
    body = payload.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise ProtocolError(f"{where}.body must be a string")
    enc = payload.get("body_encoding")
    if enc in (None, "", "utf-8"):
        return body.encode("utf-8", "surrogatepass")
    if enc == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolError(f"{where}.body is not valid base64") from None
    raise ProtocolError(f"{where}.body_encoding must be 'base64' or absent")


def _put_body(d: dict[str, Any], body: bytes | str | None) -> None:
    text, b64 = encode_body(body)
    d["body"] = text
    if b64:
        d["body_encoding"] = "base64"


def _headers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where}.headers must be an object")
    for k, v in value.items():
        if not isinstance(v, str):
            raise ProtocolError(f"{where}.headers[{k!r}] must be a string")
    return value


# --------------------------------------------------------------------------- http


@dataclass
class HttpRequest:
    """A request forwarded to a plugin. ``path`` is below the plugin's route, query kept."""

    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    # The request came in a binary frame: the SDK answers it in one too.
    binary: bool = False

    @property
    def route_path(self) -> str:
        """The path without the query string."""
        return self.path.split("?", 1)[0]

    @property
    def query(self) -> dict[str, str]:
        from urllib.parse import parse_qsl

        qs = self.path.split("?", 1)[1] if "?" in self.path else ""
        return dict(parse_qsl(qs, keep_blank_values=True))

    def header(self, name: str, default: str | None = None) -> str | None:
        lname = name.lower()
        for k, v in self.headers.items():
            if k.lower() == lname:
                return v
        return default

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        """Parse the body as JSON; a malformed body is the client's fault (400)."""
        import json

        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise PluginError(f"request body is not valid JSON: {exc}", 400, "bad_json") from None


@dataclass
class HttpResponse:
    """A plugin's answer; ``body`` may be bytes, str or a JSON-able object (see ``json``)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | str = b""

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None):
        from .codec import dumps

        h = {"Content-Type": "application/json"}
        if headers:
            h.update(headers)
        return cls(status, h, dumps(data))

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8"):
        return cls(status, {"Content-Type": content_type}, text)

    @property
    def body_bytes(self) -> bytes:
        body = self.body
        return body.encode("utf-8", "surrogatepass") if isinstance(body, str) else body

    def to_payload(self, binary: bool = False) -> dict[str, Any]:
        """The reply payload; with ``binary`` without the body (it goes as the frame's tail)."""
        d: dict[str, Any] = {"status": self.status, "headers": self.headers}
        if not binary:
            _put_body(d, self.body)
        return d


def _inner(payload: Any, where: str) -> dict[str, Any]:
    """Accept ``payload.payload`` (original nesting) and a flat payload."""
    if not isinstance(payload, dict):
        raise ProtocolError(f"{where} must be an object")
    inner = payload.get("payload")
    if isinstance(inner, dict):
        return inner
    if inner is not None:
        raise ProtocolError(f"{where}.payload must be an object")
    return payload


def parse_http_request(payload: Any, body: bytes | None = None) -> HttpRequest:
    """The request in ``payload``; ``body`` is the raw tail of a binary frame, if it came in
    one (its JSON must then carry no ``body`` of its own)."""
    p = _inner(payload, "http payload")
    method, path = p.get("method"), p.get("path")
    if not isinstance(method, str) or not method:
        raise ProtocolError("http payload.method must be a non-empty string")
    if not isinstance(path, str):
        raise ProtocolError("http payload.path must be a string")
    if not path.startswith("/"):
        path = "/" + path
    headers = _headers(p.get("headers"), "http payload")
    if body is None:
        return HttpRequest(method.upper(), path, headers, decode_body(p, "http payload"))
    if p.get("body") is not None:
        raise ProtocolError("http payload.body must be absent in a binary frame")
    if type(body) is not bytes:  # a view of a big frame's buffer: handlers get bytes
        body = bytes(body)
    return HttpRequest(method.upper(), path, headers, body, binary=True)


class BadReply(ProtocolError):
    """A plugin's reply breaks the protocol; the message says what is wrong (the reason the
    host answers 502 with, and writes to the plugin's log and events)."""


def validate_http_reply(payload: Any, raw_body: bytes | None = None) -> HttpResponse:
    """The one check of a plugin's answer to an http request.

    The checker, the supervisor, the worker's control client and the SDK's harness all call
    this, so they agree on what a valid reply is (docs/plugins/PROTOCOL.md, section 6): the
    payload is an object (the nested ``payload.payload`` form is read too); ``status`` absent
    means 200, else an integer 100-599; ``headers`` absent, null or an object of strings;
    ``body`` absent, null or a string; ``body_encoding`` absent, ``"utf-8"`` or ``"base64"``
    (then ``body`` must be valid base64).

    ``raw_body`` is the body of a reply that came in a binary frame; its payload must then
    have no ``body`` (nor ``body_encoding``).

    Returns an ``HttpResponse``: a text body is the string as sent (PERF: no copy on the
    relay's hot path; ``body_bytes`` encodes it), a base64 body its decoded bytes, a binary
    frame's body as it came. Raises ``BadReply`` naming the first problem.
    """
    if type(payload) is not dict:
        raise BadReply("the reply's payload is not an object")
    inner = payload.get("payload")
    if inner is not None:
        if type(inner) is not dict:
            raise BadReply("the reply's payload.payload is not an object")
        payload = inner
    status = payload.get("status", 200)
    if type(status) is not int or not 100 <= status <= 599:
        raise BadReply(f"the reply's status {status!r} is not an integer 100-599")
    headers = payload.get("headers")
    if headers is None:
        headers = {}
    elif type(headers) is not dict:
        raise BadReply("the reply's headers are not an object")
    else:
        for k, v in headers.items():
            if type(v) is not str:
                raise BadReply(f"the reply's header {k!r} is not a string")
    body = payload.get("body")
    if raw_body is not None:
        if body is not None or payload.get("body_encoding") is not None:
            raise BadReply("a reply in a binary frame must not also carry a JSON body")
        return HttpResponse(status, headers, raw_body)
    if body is None:
        body = ""
    elif type(body) is not str:
        raise BadReply("the reply's body is not a string")
    enc = payload.get("body_encoding")
    if enc is not None and enc != "utf-8" and enc != "":
        if enc != "base64":
            raise BadReply(f"the reply's body_encoding {enc!r} is not 'base64'")
        try:
            return HttpResponse(status, headers, base64.b64decode(body, validate=True))
        except (binascii.Error, ValueError):
            raise BadReply("the reply's body is not valid base64") from None
    return HttpResponse(status, headers, body)


# --------------------------------------------------------------------------- kv


@dataclass(frozen=True)
class KvOp:
    """One key-value operation; ``list`` is only on the plugin->host channel."""

    action: str
    key: str = ""
    value: str | None = None
    prefix: str = ""

    def to_payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {"action": self.action, "key": self.key}
        if self.action == "set":
            d["value"] = self.value
        if self.action == "list" and self.prefix:
            d["prefix"] = self.prefix
        return d


def parse_kv_op(payload: Any, allow_list: bool = False) -> KvOp:
    p = _inner(payload, "kv payload")
    action = p.get("action")
    allowed = KV_ACTIONS if allow_list else KV_ACTIONS[:3]
    if action not in allowed:
        raise ProtocolError(f"kv payload.action must be one of {', '.join(allowed)}")
    if action == "list":
        prefix = p.get("prefix", "") or ""
        if not isinstance(prefix, str):
            raise ProtocolError("kv payload.prefix must be a string")
        return KvOp("list", prefix=prefix)
    key = p.get("key")
    if not isinstance(key, str) or not key:
        raise ProtocolError("kv payload.key must be a non-empty string")
    if len(key) > 1024:
        raise ProtocolError("kv payload.key must be at most 1024 characters")
    value = p.get("value")
    if action == "set" and not isinstance(value, str):
        raise ProtocolError("kv payload.value must be a string for set")
    return KvOp(action, key, value if action == "set" else None)


def parse_kv_result(payload: Any) -> Any:
    """The ``value`` of a kv reply (``keys`` for list); an ``error`` becomes PluginError."""
    if not isinstance(payload, dict):
        raise ProtocolError("kv reply payload must be an object")
    if payload.get("error"):
        raise PluginError(str(payload["error"]), 500, "kv_error")
    if "keys" in payload:
        return payload["keys"]
    value = payload.get("value")
    if value is not None and not isinstance(value, str):
        raise ProtocolError("kv reply payload.value must be a string or null")
    return value


# --------------------------------------------------------------------------- envelopes


# A request id: Toru sends strings; an integer a peer sent is kept as it is, so the answer
# echoes it unchanged (whoever matches replies reads it as its decimal string).
RequestId = str | int


@dataclass
class Message:
    type: str
    payload: dict[str, Any]
    request_id: RequestId | None = None
    timestamp: str | None = None


def make_message(
    type_: str, payload: dict[str, Any], request_id: RequestId | None = None
) -> dict[str, Any]:
    """The one envelope writer (docs/plugins/PROTOCOL.md section 4). NOTE: the supervisor's
    relay writes the same envelope by concatenation (``PluginConnection.relay_http``, PERF)."""
    msg: dict[str, Any] = {"type": type_, "timestamp": now_iso(), "payload": payload}
    if request_id is not None:
        msg["request_id"] = request_id
    return msg


def parse_message(obj: Any) -> Message:
    if not isinstance(obj, dict):
        raise ProtocolError("message must be a JSON object")
    type_ = obj.get("type")
    if type_ not in MESSAGE_TYPES:
        raise ProtocolError(
            f"message.type must be one of {', '.join(MESSAGE_TYPES)}, got {type_!r}"
        )
    payload = obj.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError("message.payload must be an object")
    rid = obj.get("request_id")
    if rid is not None and type(rid) is not str and type(rid) is not int:
        raise ProtocolError("message.request_id must be a string")
    ts = obj.get("timestamp")
    return Message(type_, payload, rid, ts if isinstance(ts, str) else None)


def lifecycle_init(instance_id: str, plugin_socket: str, log_path: str) -> dict:
    return make_message(
        "lifecycle",
        {
            "action": "init",
            "instance_id": instance_id,
            "plugin_socket": plugin_socket,
            "log_path": log_path,
        },
    )


def host_init(
    instance_id: str,
    plugin_socket: str,
    log_path: str,
    capabilities: tuple[str, ...] = HOST_CAPABILITIES,
) -> dict:
    """The host's ``init``: the original fields plus ``protocol_version`` and ``capabilities``.

    Original plugins ignore keys they do not know, so a v1 plugin works unchanged.
    """
    msg = lifecycle_init(instance_id, plugin_socket, log_path)
    msg["payload"]["protocol_version"] = PROTOCOL_VERSION
    msg["payload"]["capabilities"] = list(capabilities)
    return msg


def lifecycle_shutdown() -> dict:
    return make_message("lifecycle", {"action": "shutdown"})


def http_request_message(request_id: str, req: HttpRequest, binary: bool = False) -> dict:
    """The request message; with ``binary`` without the body (send it as the frame's tail)."""
    inner: dict[str, Any] = {"method": req.method, "path": req.path, "headers": req.headers}
    if not binary:
        _put_body(inner, req.body)
    return make_message("http", {"payload": inner}, request_id)


def http_response_message(
    request_id: RequestId | None, resp: HttpResponse, binary: bool = False
) -> dict:
    """The reply message; with ``binary`` without the body (send it as the frame's tail)."""
    return make_message("http", resp.to_payload(binary), request_id)


def kv_request_message(request_id: str, op: KvOp) -> dict:
    return make_message("kv", {"payload": op.to_payload()}, request_id)


def kv_response_message(
    request_id: RequestId | None, value: Any = None, error: str | None = None
) -> dict:
    if error is not None:
        return make_message("kv", {"value": None, "error": error}, request_id)
    if isinstance(value, list):
        return make_message("kv", {"keys": value}, request_id)
    return make_message("kv", {"value": value}, request_id)
