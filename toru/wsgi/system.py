"""``POST /api/plugins/rescan`` (admin) and ``GET /api/system`` (any user).

Both are thin calls to the supervisor's control socket: ``rescan`` re-reads
``plugins/*.binary`` and probes again every binary whose metadata gave no answer (the retry of
an ``invalid`` plugin the UI offers); ``/api/system`` is what the system page shows besides
the plugin list: Toru's version, the supervisor's start time and the store's health.
"""

from __future__ import annotations

import asyncio
import time

import falcon
import falcon.asgi

from .. import __version__
from .control import Control
from .http import send_json

RESCAN_TIMEOUT = 30.0  # probing every discovering binary again can take a few seconds
SYSTEM_TIMEOUT = 5.0


class RescanResource:
    auth = "admin"

    def __init__(self, control: Control) -> None:
        self.control = control

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        """``{"added": [id], "removed": [id], "total": n}``, the control op's result."""
        send_json(resp, await self.control.call("rescan", {}, RESCAN_TIMEOUT))


class SystemResource:
    auth = "user"

    def __init__(self, control: Control) -> None:
        self.control = control

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        # PERF: both calls pipelined on the worker's one control connection
        hello, ping = await asyncio.gather(
            self.control.call("hello", {}, SYSTEM_TIMEOUT),
            self.control.call("ping", {}, SYSTEM_TIMEOUT),
        )
        started = hello.get("started_at")
        store = ping.get("store") or {"ok": False, "error": "not reported"}
        send_json(
            resp,
            {
                "version": __version__,
                "supervisor": {
                    "pid": hello.get("pid"),
                    "started_at": started,
                    "uptime_s": max(0.0, time.time() - started) if started else None,
                },
                "store": store,
            },
        )
