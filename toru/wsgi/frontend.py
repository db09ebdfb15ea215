"""The app's ASGI entry: plugin routes go straight to their resource, the rest to Falcon.

PERF: a plugin-route request is the one that must cost least (every plugin's UI and API
calls are such requests). Falcon's ``App.__call__`` spends a fixed part of each request on
work this route does not need: the ASGI scope checks, the router (the route is known from
the path's prefix), and the generic loops over the middleware stacks. ``Frontend`` runs the
same steps for ``/api/plugins/route/...`` itself, and nothing else differs:

- the request and the response are Falcon's own objects (``falcon.asgi.Request`` with the
  app's ``req_options``, ``Response`` with its ``resp_options``): the same header, cookie
  and Content-Length parsing, the same body stream, the same header and cookie rendering;
- the hooks are the app's middleware objects, in Falcon's order (every ``process_request``,
  then every ``process_resource``, the responder, every ``process_response`` in reverse;
  the rest skipped once ``resp.complete``), so auth, CSRF, the security headers and the
  metrics are those of every other route;
- an exception goes to the handler that ``errors.install`` gives Falcon for its class
  (``errors.handler_for``), so the JSON error bodies are the same;
- the response is sent as ``falcon.asgi.App`` sends a non-streaming one: Content-Length
  always, no body (and no default Content-Type on 204/304) for HEAD, 1xx, 204 and 304.

A request this path does not take (another method, a websocket, a ``root_path``) goes to
Falcon, which serves the same resource on the same templates. tests/web/test_frontend.py
sends the same requests through both and compares the answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import falcon.asgi

from . import errors
from .headers import PLUGIN_ROUTE_PREFIX

# The templates Falcon's router reports for these paths (toru/wsgi/app.py adds them).
ROUTE_TEMPLATE = PLUGIN_ROUTE_PREFIX + "{route}"
REST_TEMPLATE = PLUGIN_ROUTE_PREFIX + "{route}/{rest:path}"
# The resource's responders (``PluginRouteResource.on_*``); other methods get Falcon's 405.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BODILESS = frozenset({100, 101, 204, 304})  # falcon.asgi.app's rules for what has no body
_TYPELESS = frozenset({204, 304})  # ... and no default Content-Type

Hook = Callable[..., Awaitable[None]]


def _hooks(middleware: Sequence[object], name: str) -> tuple[Hook, ...]:
    return tuple(getattr(m, name) for m in middleware if hasattr(m, name))


class Frontend:
    """ASGI callable: see the module docstring. ``app`` is the whole Falcon app (it also
    serves the plugin routes this path passes on); ``middleware`` is the list it was built
    with; ``resource`` is the plugin-route resource it routes the two templates to."""

    def __init__(self, app: falcon.asgi.App, middleware: Sequence[object], resource: Any) -> None:
        self.app = app
        self.resource = resource
        self._responder = resource.forward
        self._req_options = app.req_options
        self._resp_options = app.resp_options
        self._request_hooks = _hooks(middleware, "process_request")
        self._resource_hooks = _hooks(middleware, "process_resource")
        self._response_hooks = _hooks(middleware[::-1], "process_response")

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if (
            scope["type"] != "http"
            or not scope["path"].startswith(PLUGIN_ROUTE_PREFIX)
            or scope["method"] not in METHODS
            or scope.get("root_path")
        ):
            await self.app(scope, receive, send)
            return
        first = await receive()  # as Falcon: nothing before the first http.request event
        if first["type"] == "http.disconnect":
            return
        req = falcon.asgi.Request(scope, receive, first_event=first, options=self._req_options)
        resp = falcon.asgi.Response(options=self._resp_options)
        resource = self.resource
        ok = False
        try:
            for hook in self._request_hooks:
                await hook(req, resp)
                if resp.complete:
                    break
            if not resp.complete:
                below = scope["path"][len(PLUGIN_ROUTE_PREFIX) :]
                req.uri_template = REST_TEMPLATE if "/" in below else ROUTE_TEMPLATE
                for hook in self._resource_hooks:
                    await hook(req, resp, resource, {})
                    if resp.complete:
                        break
                if not resp.complete:
                    await self._responder(req, resp)
            ok = True
        except Exception as ex:
            await errors.handler_for(ex)(req, resp, ex, {})
        for hook in self._response_hooks:
            try:
                await hook(req, resp, resource, ok)
            except Exception as ex:
                await errors.handler_for(ex)(req, resp, ex, {})
                ok = False
        await _send(req, resp, send, self._resp_options.default_media_type)


async def _send(
    req: falcon.asgi.Request, resp: falcon.asgi.Response, send: Callable, media_type: str | None
) -> None:
    """``resp`` as ``falcon.asgi.App`` sends a response whose body is ``text``/``data``."""
    if resp.stream is not None or resp.sse is not None:
        # NOTE: Falcon's streaming and SSE sending is not mirrored here; a responder of this
        # path that streams must teach this function first (or the body would be lost).
        raise RuntimeError("frontend._send sends text/data bodies only, not resp.stream/sse")
    data = await resp.render_body() or b""
    status = resp.status_code
    bodiless = req.method == "HEAD" or status in _BODILESS
    if status in _TYPELESS:
        media_type = None
    # HEAD keeps a Content-Length the responder set; 1xx/204/304 get none
    if status not in _BODILESS and not (bodiless and resp.get_header("Content-Length") is not None):
        resp.set_header("Content-Length", str(len(data)))
    # NOTE: Falcon's own rendering of the header list (cookies and appended headers
    # included); ``_asgi_headers`` is what ``App.__call__`` calls.
    await send(
        {"type": "http.response.start", "status": status, "headers": resp._asgi_headers(media_type)}
    )
    await send({"type": "http.response.body", "body": b"" if bodiless else data})
