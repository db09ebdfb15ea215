"""``/api/plugins/...`` management resources: thin calls to the supervisor's control socket.

The supervisor owns plugin state; these resources validate input, pick the control op and
hand back its result. Its errors are ``ToruError``s with the right status already.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import falcon
import falcon.asgi

from toru_plugin_api.messages import ID_RE, ProtocolError, decode_body

from ..errors import BadGateway, BadRequest, NotFound, ToruError
from .control import Control
from .http import field, query_int, read_json, send_json

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
KV_ACTIONS = ("get", "set", "delete", "list")
CONTROL_TIMEOUT = 10.0
WARNINGS_HEADER = "X-Toru-Warnings"
ENABLE_TIMEOUT = 30.0


def _plugin_id(plugin_id: str) -> str:
    if not ID_RE.match(plugin_id):
        raise NotFound(f"no plugin {plugin_id!r}", code="plugin_not_found")
    return plugin_id


class _ControlResource:
    """A resource that answers through the supervisor's control socket."""

    auth = "user"

    def __init__(self, control: Control) -> None:
        self.control = control


class _PluginOp(_ControlResource):
    """Answers one control op about the plugin in the URL with the op's result: ``op``
    with ``{"plugin": id, **self.args(req)}`` within ``timeout``."""

    op = ""

    def __init__(self, control: Control, timeout: float = CONTROL_TIMEOUT) -> None:
        super().__init__(control)
        self.timeout = timeout

    def args(self, req: falcon.asgi.Request) -> dict[str, Any]:
        """The op's arguments besides the plugin id, from the query (400 when bad)."""
        return {}

    async def answer(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, plugin_id: str
    ) -> None:
        args = {"plugin": _plugin_id(plugin_id), **self.args(req)}
        send_json(resp, await self.control.call(self.op, args, self.timeout))


class PluginsResource(_ControlResource):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # PERF: both calls pipelined on the worker's one control connection
        plugins, warnings = await asyncio.gather(
            self.control.call("list", {}, CONTROL_TIMEOUT), _warnings(self.control)
        )
        send_json(resp, plugins)
        if warnings:
            resp.set_header(WARNINGS_HEADER, json.dumps(warnings, ensure_ascii=True))


async def _warnings(control: Control) -> list | None:
    """Operator warnings (a damaged config.json, a damaged database), sent as the header
    ``X-Toru-Warnings``: a JSON array of ``{"code", "message", ...}``, ASCII-escaped.

    A header keeps the body the bare list it always was (backward compatible); the UI shows
    the warnings as a banner. A supervisor that cannot answer just means no header.
    """
    try:
        warnings = await control.call("warnings", {}, CONTROL_TIMEOUT)
    except ToruError:
        return None
    return warnings if isinstance(warnings, list) and warnings else None


class PluginResource(_PluginOp):
    op = "get"
    on_get = _PluginOp.answer


class PluginActionResource(_PluginOp):
    """``POST /api/plugins/:id/enable``, ``/disable``, ``/restart`` and ``/approve`` (admin).

    ``restart`` is graceful (an upgrade to the same binary, docs/ARCHITECTURE.md): 404
    unknown, 409 not enabled, 502 when the new process failed (the old one serves on).
    """

    auth = "admin"

    def __init__(self, control: Control, op: str, timeout: float = ENABLE_TIMEOUT) -> None:
        super().__init__(control, timeout)
        self.op = op

    on_post = _PluginOp.answer


class BundleResource(_ControlResource):
    """The plugin's frontend bundle: ``GET /bundle.js`` forwarded to the plugin."""

    def __init__(self, control: Control, timeout: float) -> None:
        super().__init__(control)
        self.timeout = timeout

    async def on_get(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, plugin_id: str
    ) -> None:
        args = {
            "plugin": _plugin_id(plugin_id),
            "method": "GET",
            "path": "/bundle.js",
            "headers": {"Accept": "application/javascript"},
            "body": "",
        }
        result = await self.control.call("http", args, self.timeout)
        try:
            status = int(result.get("status", 502))
            body = decode_body(result, "bundle")
        except (ProtocolError, TypeError, ValueError, AttributeError):
            raise BadGateway("the plugin answered the bundle request with garbage") from None
        if status == 404:
            raise NotFound(f"plugin {plugin_id!r} has no frontend bundle", code="no_bundle")
        if status != 200:
            raise BadGateway(f"the plugin answered the bundle request with {status}")
        resp.content_type = "application/javascript; charset=utf-8"
        resp.cache_control = ["no-cache"]
        resp.data = body


class LogsResource(_PluginOp):
    op = "logs"
    on_get = _PluginOp.answer

    def args(self, req: falcon.asgi.Request) -> dict[str, Any]:
        args: dict[str, Any] = {
            "page": query_int(req, "page", 0, 0, 1_000_000),
            "page_size": query_int(req, "page_size", 100, 1, 1000),
        }
        level = req.get_param("level")
        if level:
            if level.lower() not in LOG_LEVELS:
                raise BadRequest(f"level must be one of {', '.join(LOG_LEVELS)}", code="bad_query")
            args["level"] = level.lower()
        return args


class EventsResource(_PluginOp):
    op = "events"
    on_get = _PluginOp.answer

    def args(self, req: falcon.asgi.Request) -> dict[str, Any]:
        return {"limit": query_int(req, "limit", 50, 1, 1000)}


class KvResource(_ControlResource):
    """``POST /api/plugins/:id/kv`` ``{"action", "key", "value"?, "prefix"?}``."""

    def __init__(self, control: Control, body_limit: int, body_timeout: float) -> None:
        super().__init__(control)
        self.body_limit = body_limit
        self.body_timeout = body_timeout

    async def on_post(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, plugin_id: str
    ) -> None:
        body = await read_json(req, self.body_limit, self.body_timeout)
        action = field(body, "action")
        if action not in KV_ACTIONS:
            raise BadRequest(f"action must be one of {', '.join(KV_ACTIONS)}", code="bad_field")
        args: dict[str, Any] = {"plugin": _plugin_id(plugin_id), "action": action}
        if action == "list":
            args["prefix"] = field(body, "prefix", required=False) or ""
        else:
            key = field(body, "key")
            if not key or len(key) > 1024:
                raise BadRequest("key must be 1-1024 characters", code="bad_field")
            args["key"] = key
            if action == "set":
                args["value"] = field(body, "value")
        send_json(resp, await self.control.call("kv", args, CONTROL_TIMEOUT))


class StatsResource(_PluginOp):
    op = "stats"
    on_get = _PluginOp.answer
