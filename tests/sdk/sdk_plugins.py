"""An SDK plugin used by the runtime tests (in process, or as an executable via conftest)."""

from __future__ import annotations

import asyncio

from toru_plugin_api import HttpRequest, PluginError, ToruPlugin, route


class SlowFast(ToruPlugin):
    """Answers ``/sleep/{ms}`` after that delay, so replies leave out of order."""

    metadata = {"id": "slow-fast", "name": "Slow Fast", "version": "0.1", "route": "/sf"}
    bundle = b"window.ToruPlugins = window.ToruPlugins || {};"

    def __init__(self) -> None:
        super().__init__()
        self.inits = 0
        self.shutdowns = 0

    async def init(self, ctx) -> None:
        await super().init(ctx)
        self.inits += 1
        ctx.log.info("init called", config=ctx.config)

    async def shutdown(self) -> None:
        self.shutdowns += 1

    @route("GET", "/sleep/{ms}")
    async def sleep(self, req: HttpRequest) -> dict:
        await asyncio.sleep(int(req.params["ms"]) / 1000)
        return {"slept": int(req.params["ms"])}

    @route("GET", "/files/{name:path}")
    async def files(self, req: HttpRequest) -> dict:
        return {"name": req.params["name"]}

    @route("GET", "/whoami")
    async def whoami(self, req: HttpRequest) -> dict:
        return {"instance_id": self.ctx.instance_id, "inits": self.inits}

    @route("GET", "/teapot")
    async def teapot(self, req: HttpRequest) -> dict:
        raise PluginError("short and stout", 418, "teapot")

    @route("GET", "/boom")
    async def boom(self, req: HttpRequest) -> dict:
        raise RuntimeError("kaboom")

    @route("POST", "/kv/{key}")
    async def kv_set(self, req: HttpRequest) -> dict:
        await self.ctx.kv.set(req.params["key"], req.text)
        return {"keys": await self.ctx.kv.list()}

    @route("GET", "/kv/{key}")
    async def kv_get(self, req: HttpRequest) -> dict:
        return {"value": await self.ctx.kv.get(req.params["key"])}
