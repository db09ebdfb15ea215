"""hello-python: the SDK example plugin.

A counter kept in the host's KV store (``ctx.kv``), an echo endpoint the host's tests use to
see exactly what was forwarded, a binary round trip, and a vanilla-JS frontend bundle.
"""

from __future__ import annotations

import asyncio

from toru_plugin_api import HttpRequest, HttpResponse, ToruPlugin, route

BINARY = bytes(range(256))  # deliberately not UTF-8: travels base64-encoded on the wire


class HelloPlugin(ToruPlugin):
    metadata = {
        "id": "hello-python",
        "name": "Hello Python",
        "version": "1.0.0",
        "author": "Toru",
        "icon": "👋",
        "route": "/hello",
    }
    bundle = "bundle.js"

    def __init__(self) -> None:
        super().__init__()
        self._count_lock = asyncio.Lock()

    @route("GET", "/")
    async def index(self, req: HttpRequest) -> dict:
        return {"message": "Hello from Python!", "instance_id": self.ctx.instance_id}

    @route("GET", "/counter")
    async def counter(self, req: HttpRequest) -> dict:
        return {"count": int(await self.ctx.kv.get("count") or 0)}

    @route("POST", "/counter/increment")
    async def increment(self, req: HttpRequest) -> dict:
        # NOTE: get+set is not atomic in the store; the lock keeps concurrent clicks exact.
        async with self._count_lock:
            count = int(await self.ctx.kv.get("count") or 0) + 1
            await self.ctx.kv.set("count", str(count))
        self.ctx.log.info("counter incremented", count=count)
        return {"count": count}

    @route("*", "/echo")
    @route("*", "/echo/{rest:path}")
    async def echo(self, req: HttpRequest) -> dict:
        return {
            "method": req.method,
            "path": req.route_path,
            "raw_path": req.path,
            "query": req.query,
            "headers": req.headers,
            "body": req.text,
        }

    @route("GET", "/bytes")
    async def get_bytes(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, {"Content-Type": "application/octet-stream"}, BINARY)

    @route("POST", "/bytes")
    async def post_bytes(self, req: HttpRequest) -> HttpResponse:
        return HttpResponse(200, {"Content-Type": "application/octet-stream"}, req.body)
