"""Error mapping: every failure becomes JSON ``{"error": code, "message": text}``.

``ToruError`` (ours and the supervisor's, re-raised by the control client) carries its own
status; Falcon's own HTTP errors (404 no route, 405, ...) go through the serializer; anything
else is a bug, logged with its traceback and answered with a 500 JSON body, and the worker
keeps serving.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from types import MappingProxyType
from typing import Any

import falcon
import falcon.asgi
import ujson

from ..errors import ToruError

log = logging.getLogger("toru.wsgi")


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


def _write(resp: falcon.Response, status: int, code: str, message: str) -> None:
    resp.status = status
    resp.content_type = falcon.MEDIA_JSON
    resp.data = ujson.dumps(
        {"error": code, "message": message}, ensure_ascii=False, escape_forward_slashes=False
    ).encode()
    resp.set_header("Cache-Control", "no-store")


async def handle_toru_error(
    req: falcon.asgi.Request, resp: falcon.Response, ex: ToruError, params: dict[str, Any]
) -> None:
    _write(resp, ex.status, ex.code, ex.message)
    if ex.status in (429, 503):
        try:
            retry = max(1, round(float(ex.retry_after)))
        except (TypeError, ValueError, OverflowError):  # absent or odd: 1 s is a safe hint
            retry = 1
        resp.set_header("Retry-After", str(retry))


async def handle_http_error(
    req: falcon.asgi.Request, resp: falcon.Response, ex: falcon.HTTPError, params: dict[str, Any]
) -> None:
    status = ex.status_code
    message = ex.description or ex.title or _code_for(status).replace("_", " ")
    code = ex.code if isinstance(ex.code, str) else _code_for(status)
    _write(resp, status, code, str(message))
    for name, value in (ex.headers or {}).items():
        resp.set_header(name, value)


async def handle_connection_error(
    req: falcon.asgi.Request, resp: falcon.Response, ex: ConnectionError, params: dict[str, Any]
) -> None:
    """A socket error that escaped the control client still means "supervisor unreachable"."""
    log.warning("connection error in %s %s: %s", req.method, req.path, ex)
    _write(resp, 503, "supervisor_unavailable", f"the supervisor is unreachable: {ex}")
    resp.set_header("Retry-After", "1")


async def handle_unexpected(
    req: falcon.asgi.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]
) -> None:
    log.exception("unhandled error in %s %s", req.method, req.path)
    resp.complete = True
    _write(resp, 500, "internal_error", "internal server error (logged)")


Handler = Callable[[falcon.asgi.Request, falcon.Response, Any, dict[str, Any]], Awaitable[None]]
HANDLERS: Mapping[type[Exception], Handler] = MappingProxyType(
    {
        Exception: handle_unexpected,
        ConnectionError: handle_connection_error,
        falcon.HTTPError: handle_http_error,
        ToruError: handle_toru_error,
    }
)


def handler_for(ex: Exception) -> Handler:
    """The handler Falcon picks for ``ex``: that of its most specific class (its MRO).

    For ``frontend.Frontend``, which serves the plugin routes without Falcon's app loop.
    NOTE: Falcon also has a default handler for ``falcon.HTTPStatus``, which nothing on
    that path raises.
    """
    for cls in type(ex).__mro__:
        handler = HANDLERS.get(cls)
        if handler is not None:
            return handler
    return handle_unexpected


def install(app: falcon.asgi.App) -> None:
    """Register ``HANDLERS``; Falcon picks the most specific class for each exception."""
    for cls, handler in HANDLERS.items():
        app.add_error_handler(cls, handler)
