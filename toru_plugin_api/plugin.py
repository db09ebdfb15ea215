"""The plugin author's API: ``ToruPlugin``, the ``@route`` decorator and ``PluginContext``.

A plugin is a subclass of ``ToruPlugin`` with ``metadata`` and routed handler methods::

    class Hello(ToruPlugin):
        metadata = {"id": "hello", "name": "Hello", "version": "1.0.0", "route": "/hello"}

        @route("GET", "/items/{id}")
        async def item(self, req):
            return {"id": req.params["id"]}

Handlers may return an ``HttpResponse``, a ``dict``/``list`` (JSON), ``str`` (text), ``bytes``
(octet-stream) or ``None`` (204). Raising ``PluginError(msg, status)`` answers with that status.
A handler that never awaits may be a plain ``def``: the runtime then calls it inline, without
an asyncio Task per request (it must not block: it runs on the event loop).
"""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .codec import dumps
from .messages import HttpRequest, HttpResponse, KvOp, PluginError, PluginMetadata

if TYPE_CHECKING:
    from .kv import KvStore
    from .log import PluginLogger

__all__ = ["PluginContext", "ToruPlugin", "error_response", "route", "to_response"]

Handler = Callable[[Any, HttpRequest], Awaitable[Any] | Any]
_PARAM_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(path))?\}")
_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class PluginContext:
    """What a plugin gets in ``init``: who it runs for, its config, its KV store and logger."""

    instance_id: str
    config: dict[str, Any]
    kv: KvStore
    log: PluginLogger
    plugin_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def route(method: str | tuple[str, ...], pattern: str) -> Callable[[Handler], Handler]:
    """Declare a handler method for ``method`` (or several, or ``"*"``) and a path pattern.

    ``{name}`` matches one path segment, ``{name:path}`` the rest of the path; matches land
    in ``req.params``. Patterns are relative to the plugin's route (``/`` is its root).
    """
    methods = (method,) if isinstance(method, str) else tuple(method)

    def mark(fn: Handler) -> Handler:
        routes = list(getattr(fn, "_toru_routes", ()))
        routes.extend((m.upper(), pattern) for m in methods)
        fn._toru_routes = routes  # type: ignore[attr-defined]
        return fn

    return mark


def _compile(pattern: str) -> re.Pattern[str]:
    if not pattern.startswith("/"):
        pattern = "/" + pattern
    out, pos = [], 0
    for m in _PARAM_RE.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(pattern[pos:]))
    body = "".join(out)
    if len(pattern) > 1 and pattern.endswith("/"):
        body = body[:-1]  # "/items/" and "/items" are the same route
    return re.compile("^" + body + "/?$" if pattern != "/" else "^/?$")


class _Router:
    """Routes compiled once per plugin class; static paths are a dict lookup."""

    __slots__ = ("dynamic", "static")

    def __init__(self, table: list[tuple[str, str, str]]):
        self.static: dict[str, dict[str, str]] = {}
        self.dynamic: list[tuple[re.Pattern[str], dict[str, str]]] = []
        by_pattern: dict[str, dict[str, str]] = {}
        for method, pattern, attr in table:
            by_pattern.setdefault(pattern, {})[method] = attr
        for pattern, methods in by_pattern.items():
            if _PARAM_RE.search(pattern):
                self.dynamic.append((_compile(pattern), methods))
            else:
                key = "/" + pattern.strip("/")
                self.static.setdefault(key, {}).update(methods)

    def match(self, path: str) -> tuple[dict[str, str] | None, dict[str, str]]:
        key = "/" + path.strip("/") if path != "/" else "/"
        methods = self.static.get(key)
        if methods is not None:
            return methods, {}
        for rx, methods in self.dynamic:
            m = rx.match(path)
            if m:
                return methods, m.groupdict()
        return None, {}


def to_response(result: Any) -> HttpResponse:
    """Turn a handler's return value into an ``HttpResponse``."""
    if isinstance(result, HttpResponse):
        return result
    if result is None:
        return HttpResponse(204, {}, b"")
    if isinstance(result, (dict, list)):
        return HttpResponse(200, dict(_JSON_HEADERS), dumps(result))
    if isinstance(result, str):
        return HttpResponse(200, {"Content-Type": "text/plain; charset=utf-8"}, result)
    if isinstance(result, (bytes, bytearray, memoryview)):
        return HttpResponse(200, {"Content-Type": "application/octet-stream"}, bytes(result))
    raise TypeError(
        f"handler returned {type(result).__name__}; expected HttpResponse, dict, list, str, bytes or None"
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> HttpResponse:
    """The JSON error shape the host uses too: ``{"error": code, "message": text}``."""
    h = dict(_JSON_HEADERS)
    if headers:
        h.update(headers)
    return HttpResponse(status, h, dumps({"error": code, "message": message}))


class ToruPlugin:
    """Base class of an SDK plugin.

    Class attributes:
        metadata: a ``PluginMetadata`` or a dict of its fields (validated at class creation).
        bundle: the frontend bundle served at ``GET /bundle.js``: a resource name next to the
            plugin's module (read through the module's loader), or
            the JavaScript itself as ``bytes``. ``None`` means the plugin has no UI.
            (Read through the module's loader, so it works inside a zipapp.)
    """

    metadata: PluginMetadata | dict[str, Any]
    bundle: str | bytes | None = None
    ctx: PluginContext | None = None  # set by the runtime before ``init``
    _router: _Router = _Router([])
    # Attribute names of routed handlers that are plain functions (see ``route_for``).
    _sync_handlers: frozenset[str] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        md = cls.__dict__.get("metadata")
        if isinstance(md, dict):
            cls.metadata = PluginMetadata.from_json(md)
        table: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for klass in cls.__mro__:
            for attr, value in vars(klass).items():
                if attr in seen:
                    continue
                seen.add(attr)
                for method, pattern in getattr(value, "_toru_routes", ()):
                    table.append((method, pattern, attr))
        cls._router = _Router(table)
        cls._sync_handlers = frozenset(
            attr
            for _, _, attr in table
            if not inspect.iscoroutinefunction(inspect.unwrap(getattr(cls, attr)))
        )

    def __init__(self) -> None:
        self.ctx: PluginContext | None = None
        self._bundle_cache: bytes | None = None

    # ------------------------------------------------------------------ hooks

    async def init(self, ctx: PluginContext) -> None:
        """Called once, before the first request, with the context. Override to set up state."""
        self.ctx = ctx

    async def shutdown(self) -> None:
        """Called once when the host asks the plugin to stop (or it is signalled)."""

    def route_for(self, req: HttpRequest) -> tuple[str, bool] | HttpResponse:
        """``(handler attribute, is_head)`` for ``req``, or the 404/405 answer.

        Sets ``req.params``. ``HEAD`` falls back to the ``GET`` handler (body dropped).
        """
        methods, params = self._router.match(req.route_path)
        if methods is None:
            return error_response(404, "not_found", f"no route for {req.method} {req.route_path}")
        name = methods.get(req.method) or methods.get("*")
        head = False
        if name is None and req.method == "HEAD":
            name, head = methods.get("GET"), True
        if name is None:
            allow = ", ".join(sorted(m for m in methods if m != "*"))
            return error_response(
                405, "method_not_allowed", f"{req.method} not allowed here", {"Allow": allow}
            )
        req.params = params
        return name, head

    async def handle_http(self, req: HttpRequest) -> HttpResponse:
        """Dispatch to the ``@route`` handlers; override for full control."""
        found = self.route_for(req)
        if isinstance(found, HttpResponse):
            return found
        name, head = found
        result = getattr(self, name)(req)
        if inspect.isawaitable(result):
            result = await result
        resp = to_response(result)
        if head:
            resp.body = b""
        return resp

    async def handle_kv(self, op: KvOp) -> str | None:
        """A host->plugin ``kv`` message; by default applied to the plugin's own store."""
        if self.ctx is None:
            raise PluginError("plugin not initialised", 503, "not_ready")
        kv = self.ctx.kv
        if op.action == "get":
            return await kv.get(op.key)
        if op.action == "set":
            await kv.set(op.key, op.value or "")
            return op.value
        if op.action == "delete":
            await kv.delete(op.key)
            return None
        raise PluginError(f"unsupported kv action {op.action!r}", 400, "bad_request")

    # ------------------------------------------------------------------ bundle

    def has_route(self, method: str, path: str) -> bool:
        methods, _ = self._router.match(path)
        return methods is not None and (method in methods or "*" in methods)

    def bundle_bytes(self) -> bytes | None:
        """The bundle's bytes, read once. Works from a package, a script or a zipapp."""
        cached = getattr(self, "_bundle_cache", None)
        if cached is not None or self.bundle is None:
            return cached
        data = (
            self.bundle if isinstance(self.bundle, bytes) else _read_beside(type(self), self.bundle)
        )
        if data is None:
            raise PluginError(f"bundle {self.bundle!r} not found", 500, "bundle_missing")
        self._bundle_cache = data
        return data


def _read_beside(cls: type, name: str) -> bytes | None:
    """Read ``name`` next to the module defining ``cls``, through its loader when it has one.

    NOTE: ``loader.get_data`` is what makes this work inside a zipapp (zipimporter), where the
    module's ``__file__`` is not a real path; a plain script falls back to the file system.
    """
    module = sys.modules.get(cls.__module__)
    file = getattr(module, "__file__", None)
    if module is None or not file:
        return None
    path = os.path.join(os.path.dirname(file), name)
    spec = getattr(module, "__spec__", None)
    loader = getattr(module, "__loader__", None) or getattr(spec, "loader", None)
    if loader is not None and hasattr(loader, "get_data"):
        try:
            return loader.get_data(path)
        except OSError:
            pass
    try:
        return Path(path).read_bytes()
    except OSError:
        return None
