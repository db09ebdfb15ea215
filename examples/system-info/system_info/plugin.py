"""system-info: uptime, load, memory and disks of the host, as JSON and as a small dashboard."""

from __future__ import annotations

import asyncio

from toru_plugin_api import HttpRequest, PluginError, ToruPlugin, route

from . import probes


class SystemInfoPlugin(ToruPlugin):
    metadata = {
        "id": "system-info",
        "name": "System Info",
        "version": "1.0.0",
        "author": "Toru",
        "icon": "📊",
        "route": "/system-info",
    }
    bundle = "bundle.js"

    async def _read(self, fn, *args):
        # NOTE: /proc reads are fast, but statvfs on a hung NFS mount can block: keep it off the loop.
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise PluginError(f"could not read system information: {exc}", 503, "unavailable")

    @route("GET", "/")
    async def index(self, req: HttpRequest) -> dict:
        return await self._read(probes.summary)

    @route("GET", "/uptime")
    async def uptime(self, req: HttpRequest) -> dict:
        return await self._read(probes.uptime)

    @route("GET", "/load")
    async def load(self, req: HttpRequest) -> dict:
        return await self._read(probes.load)

    @route("GET", "/memory")
    async def memory(self, req: HttpRequest) -> dict:
        return await self._read(probes.memory)

    @route("GET", "/disks")
    async def disks(self, req: HttpRequest) -> dict:
        return {"disks": await self._read(probes.disks)}
