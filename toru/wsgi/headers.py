"""Response headers Toru adds to every answer.

Toru's own answers (the UI's files, the API's JSON, /healthz, /metrics) carry a
Content-Security-Policy that allows scripts from Toru's origin only (no inline script, no
``eval``): a plugin's bundle is loaded from ``/api/plugins/<id>/bundle.js``, the same origin.
Inline ``style`` attributes stay allowed because bundles set them (examples/system-info does),
and ``data:`` images because a bundle may draw with them; neither runs code.

A plugin's answer keeps its own choices but gets ``X-Content-Type-Options: nosniff`` (so a
plugin's text or JSON is never sniffed into HTML or script) and never sets Toru's session
cookie: ``proxy.py`` drops a ``Set-Cookie`` that ``toru.session_cookie.names_toru_cookie``
refuses (the supervisor writes the warning to the plugin's log).

PERF: the header lists are precomputed tuples; the per-response work is a prefix test and a
few dict stores.
"""

from __future__ import annotations

from typing import Any

import falcon.asgi

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
