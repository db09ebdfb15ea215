"""Response headers Toru adds to every answer, and the plugin ``Set-Cookie`` it refuses.

Toru's own answers (the UI's files, the API's JSON, /healthz, /metrics) carry a
Content-Security-Policy that allows scripts from Toru's origin only (no inline script, no
``eval``): a plugin's bundle is loaded from ``/api/plugins/<id>/bundle.js``, the same origin.
Inline ``style`` attributes stay allowed because bundles set them (examples/system-info does),
and ``data:`` images because a bundle may draw with them; neither runs code.

A plugin's answer keeps its own choices but gets ``X-Content-Type-Options: nosniff`` (so a
plugin's text or JSON is never sniffed into HTML or script) and never sets Toru's session
cookie: a ``Set-Cookie`` naming ``toru_session`` would let a plugin fix or end a user's
session (docs/SECURITY.md). Such a header is dropped and reported to the plugin's log.

PERF: the header lists are precomputed tuples; the per-response work is a prefix test and a
few dict stores. The cookie check runs only on a plugin's ``Set-Cookie`` values.
"""

from __future__ import annotations

from typing import Any

import falcon.asgi

from .auth import COOKIE

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
PLUGIN_ROUTE_PREFIX = "/api/plugins/route/"

# Toru's own answers: these exact values, whatever a resource set.
_OWN = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "same-origin"),
)

# Cookie names a plugin must not set, lower-case: Toru's session cookie and the prefixed
# forms a browser would keep beside it (Toru sets no CSRF cookie: the token is a header).
_TORU_COOKIES = frozenset({COOKIE, "__host-" + COOKIE, "__secure-" + COOKIE})

STRIPPED_COOKIE_WARNING = (
    f"a reply's Set-Cookie named Toru's session cookie ({COOKIE}); Toru removed it (plugins"
    " cannot set or clear Toru's login); the plugin's other cookies were kept"
)


def names_toru_cookie(set_cookie: str) -> bool:
    """Whether a ``Set-Cookie`` value would set or clear one of Toru's cookies.

    Compared case-insensitively. A nameless cookie (``=toru_session=x``) counts too: a
    browser sends it back as ``toru_session=x``.
    """
    text = set_cookie.lstrip()
    if text[:1] == "=":
        text = text[1:]
    name = text.split(";", 1)[0].split("=", 1)[0].strip().lower()
    return name in _TORU_COOKIES


def relay_set_cookie(
    resp: falcon.asgi.Response, name: str, value: str, plugin: str, warn: Any
) -> None:
    """Append a plugin's ``Set-Cookie`` to ``resp`` unless it names Toru's cookie; then
    ``warn(plugin, STRIPPED_COOKIE_WARNING)`` instead."""
    if names_toru_cookie(value):
        warn(plugin, STRIPPED_COOKIE_WARNING)
    else:
        resp.append_header(name, value)


class SecurityHeaders:
    """Falcon middleware: the headers above on every response; API JSON is never cached."""

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: Any,
        req_succeeded: bool,
    ) -> None:
        path = req.path
        if path.startswith(PLUGIN_ROUTE_PREFIX):
            # PERF: unrolled (the hot path); a plugin's own framing and referrer choices stand
            resp.set_header("X-Content-Type-Options", "nosniff")
            if resp.get_header("X-Frame-Options") is None:
                resp.set_header("X-Frame-Options", "DENY")
            if resp.get_header("Referrer-Policy") is None:
                resp.set_header("Referrer-Policy", "same-origin")
            return
        for name, value in _OWN:
            resp.set_header(name, value)
        if path.startswith("/api/") and resp.get_header("Cache-Control") is None:
            resp.set_header("Cache-Control", "no-store")
