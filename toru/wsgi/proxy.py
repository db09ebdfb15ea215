"""``ANY /api/plugins/route/<route>/<rest>``: forward a request to a plugin and back.

What the plugin gets (documented in docs/SECURITY.md and docs/plugins/PROTOCOL.md):

- ``method``; ``path`` = the raw (still percent-encoded) path below the route plus the raw
  query string, ``/`` when empty;
- the client's headers minus hop-by-hop headers (and any the ``Connection`` header names),
  minus Toru's own credentials (``Authorization``, ``X-CSRF-Token``, the ``toru_session``
  cookie; other cookies stay), minus client-supplied ``X-Forwarded-*``/``Forwarded``/
  ``X-Toru-*``, plus ``X-Forwarded-For/Proto/Host`` computed by the trusted-proxy rules and
  ``X-Toru-User``/``X-Toru-Role`` naming the authenticated user;
- the body as bytes (non-UTF-8 travels base64 with ``body_encoding``, see the protocol doc).

Path segments that are ``.``/``..`` or contain ``/``, ``\\``, NUL or ``%`` once decoded
(i.e. ``%2e%2e``, ``%2f``, ``%5c``, double encoding) are refused with 400 before anything is
forwarded.
"""

from __future__ import annotations

import functools
import re
import time
from typing import Any
from urllib.parse import quote, unquote

import falcon
import falcon.asgi

from ..config import Config
from ..errors import BadGateway, BadRequest, GatewayTimeout, NotFound, ToruError, Unavailable
from ..session_cookie import COOKIE, names_toru_cookie
from . import metrics
from .control import Control
from .headers import PLUGIN_ROUTE_PREFIX
from .http import client_info, read_body_parts
from .routes import RouteTable

PREFIX = PLUGIN_ROUTE_PREFIX
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "proxy-connection",
    }
)
# Never forwarded from the client: Toru's credentials and headers only Toru may set.
DROP_REQUEST = frozenset(
    {
        "authorization",
        "x-csrf-token",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-real-ip",
        "forwarded",
        "host",
        "content-length",
    }
)
DROP_RESPONSE = frozenset({"content-length", "date", "server"})


def _title(name: str) -> str:
    return "-".join(p.capitalize() for p in name.split("-"))


_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


@functools.lru_cache(maxsize=1024)
def _response_header(name: str) -> str | None:
    """A plugin's header name, lower-cased, if Toru relays it: an RFC 9110 token that is
    not hop-by-hop nor one the server sets itself. PERF: cached (names repeat)."""
    if _TOKEN.match(name) is None:
        return None
    lname = name.lower()
    if lname in HOP_BY_HOP or lname in DROP_RESPONSE:
        return None
    return lname


def _request_rule(name: bytes) -> tuple[str, str] | None:
    """``(lower-case name, Title-Case name)`` when the client header (an ASGI lower-case
    name) may be forwarded; None otherwise (see the module docstring)."""
    lname = name.decode("latin-1")
    if (
        lname in HOP_BY_HOP
        or lname in DROP_REQUEST
        or lname.startswith("x-toru-")
        or lname.startswith("proxy-")
    ):
        return None
    return lname, _title(lname)


# PERF: the rules run once per distinct header name per process, and the list of headers to
# forward once per distinct header layout (the names in order: the same client sends the
# same headers), not per request. Names are client-chosen, so both caches stop growing at a
# bound.
_RULES: dict[bytes, tuple[str, str] | None] = {}
_RULES_MAX = 2048
_PLANS: dict[tuple[bytes, ...], tuple[tuple[int, str, str], ...]] = {}
_PLANS_MAX = 256


def _plan(names: tuple[bytes, ...]) -> tuple[tuple[int, str, str], ...]:
    """``(index in the ASGI header list, lower-case name, Title-Case name)`` of each
    forwardable header, in order."""
    rules = _RULES
    plan = []
    for i, name in enumerate(names):
        rule = rules.get(name, False)
        if rule is False:
            rule = _request_rule(name)
            if len(rules) < _RULES_MAX:
                rules[name] = rule
        if rule is not None:
            plan.append((i, *rule))
    return tuple(plan)


def _valid_value(value: object) -> bool:
    """A header value without CR, LF or NUL (no response splitting)."""
    return (
        isinstance(value, str) and "\r" not in value and "\n" not in value and "\x00" not in value
    )


def bad_segment(seg: str) -> bool:
    """A raw path segment that must not reach a plugin (see the module docstring)."""
    decoded = unquote(seg)
    return (
        decoded in (".", "..")
        or "/" in decoded
        or "\\" in decoded
        or "\x00" in decoded
        or "%" in decoded
    )


def split_target(req: falcon.asgi.Request) -> tuple[str, str]:
    """``(route, path)`` from the raw request target; 400 on traversal in any segment."""
    scope = req.scope
    raw = scope.get("raw_path") or b""
    raw_path = raw.decode("latin-1") if raw else ""
    if not raw_path.startswith("/"):  # a server without raw_path: rebuild from the decoded path
        raw_path = quote(req.path, safe="/:@!$&'()*+,;=~-._")
    raw_qs = (scope.get("query_string") or b"").decode("latin-1")
    if not raw_path.startswith(PREFIX):
        raise NotFound("no such plugin route", code="route_not_found")
    below = raw_path[len(PREFIX) :]
    route_seg, _, rest = below.partition("/")
    if not route_seg:
        raise NotFound("no such plugin route", code="route_not_found")
    # PERF: a segment can only be bad if it has a '%', '\\' or NUL, or starts with '.'
    # (without '%', decoding changes nothing); the exact check runs only then.
    if "%" in below or "\\" in below or "\x00" in below or "/." in "/" + below:
        for seg in [route_seg, *rest.split("/")]:
            if bad_segment(seg):
                raise BadRequest(
                    "path segments must not be '.', '..' or contain encoded '/', '\\', '%' or NUL",
                    code="bad_path",
                )
    path = "/" + rest
    if raw_qs:
        path += "?" + raw_qs
    return "/" + route_seg, path


def without_session_cookie(cookie: str) -> str:
    """A ``Cookie`` header value without Toru's session cookie (a plugin never sees the
    login): the other pairs, stripped, joined with ``; ``; "" when none is left."""
    kept = []
    for pair in cookie.split(";"):
        pair = pair.strip()
        if pair and pair.split("=", 1)[0].strip() != COOKIE:
            kept.append(pair)
    return "; ".join(kept)


def forward_headers(req: falcon.asgi.Request, trusted: frozenset[str]) -> dict[str, str]:
    """The request headers a plugin sees (see the module docstring), from the ASGI scope.

    A header the client sent more than once is joined with ``, `` (``; `` for cookies).
    """
    headers = req.scope["headers"]
    if type(headers) is not list:  # ASGI allows any iterable, which Falcon's Request consumed
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in req.headers.items()]
    connection = req.get_header("Connection")
    connection_named = (
        {t.strip().lower() for t in connection.split(",") if t.strip()} if connection else ()
    )
    out: dict[str, str] = {}
    names = tuple([h[0] for h in headers])
    plan = _PLANS.get(names)
    if plan is None:
        plan = _plan(names)
        if len(_PLANS) < _PLANS_MAX:
            _PLANS[names] = plan
    for i, lname, title in plan:
        value = headers[i][1].decode("latin-1")
        if connection_named and lname in connection_named:
            continue
        if lname == "cookie":
            value = without_session_cookie(value)
            if not value:
                continue
        if title in out:
            value = out[title] + ("; " if lname == "cookie" else ", ") + value
        out[title] = value
    info = client_info(req, trusted)
    if info.forwarded_for:
        out["X-Forwarded-For"] = info.forwarded_for
    out["X-Forwarded-Proto"] = info.scheme
    out["X-Forwarded-Host"] = info.host
    host = req.get_header("Host")
    if host:
        out["Host"] = host
    user = req.context.get("user")
    if user is not None:
        out["X-Toru-User"] = user.username
        out["X-Toru-Role"] = user.role
    return out


_ERROR_KINDS = {GatewayTimeout: "timeout", BadGateway: "bad_response"}
_CODE_CLASS = {c: f"{c}xx" for c in range(1, 6)}


class PluginRouteResource:
    auth = "user"

    def __init__(
        self,
        config: Config,
        control: Control,
        routes: RouteTable,
    ) -> None:
        self.config = config
        self.control = control
        self.routes = routes
        self.trusted = frozenset(config.trusted_proxies)

    async def forward(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **params: Any
    ) -> None:
        """The responder of every method (Falcon's, and ``frontend.Frontend``'s)."""
        route, path = split_target(req)
        body = await read_body_parts(req, self.config.body_limit, self.config.client_timeout)
        headers = forward_headers(req, self.trusted)
        plugin = await self.routes.plugin_for(route)
        t0 = time.perf_counter()
        status = 500
        metrics.add(metrics.PROXY_INFLIGHT, (plugin,))
        try:
            answer = await self.control.http(route, req.method, path, headers, body)
            status = answer.status
        except ToruError as exc:
            status = exc.status
            kind = _ERROR_KINDS.get(type(exc))
            if kind is None and isinstance(exc, Unavailable):
                kind = "unavailable"
            if kind:
                metrics.add(metrics.PROXY_ERRORS, (plugin, kind))
            raise
        finally:
            metrics.add(metrics.PROXY_INFLIGHT, (plugin,), -1.0)
            code_class = _CODE_CLASS.get(status // 100) or f"{status // 100}xx"
            metrics.observe(metrics.PROXY_DURATION, (plugin, code_class), time.perf_counter() - t0)
            # NOTE: timed here, so the generic toru_http_request_duration_seconds skips it.
            req.context.proxied = True
        if not 200 <= answer.status <= 599:  # 1xx cannot be relayed as a final answer
            raise BadGateway(f"plugin answered with status {answer.status}")
        resp.status = answer.status
        content_type = None
        for name, value in (answer.headers or {}).items():
            # a plugin's bad header must not break the response (or split it)
            lname = _response_header(name) if isinstance(name, str) else None
            if lname is None or not _valid_value(value):
                continue
            if lname == "content-type":
                content_type = value
            elif lname == "set-cookie":
                if not names_toru_cookie(value):  # Toru's login is not a plugin's to set
                    resp.append_header(name, value)
            else:
                resp.set_header(name, value)
        if answer.status in (204, 304):
            return
        resp.content_type = content_type or "application/octet-stream"
        resp.data = answer.body or b""

    on_get = on_head = on_post = on_put = on_patch = on_delete = on_options = forward
