"""The worker's one route table: route -> plugin id, for the proxy's metric labels.

Every plugin-route request goes to the supervisor, which routes it (and answers 404 and
503); the worker only needs the plugin id to label ``toru_proxy_*``. PERF: the table comes
from the control op ``list``, one call per worker every ``TTL`` seconds (in the background,
while requests use the old table), not one per request. A route not in the table waits for a
refresh, at most one every ``MISS_RETRY`` seconds, shared by every request that waits. An
unknown route gets the label ``_unknown``, so clients cannot create label values. A table
that is a few seconds old only mislabels requests to a route that just changed owner.
"""

from __future__ import annotations

import asyncio
import math
import time

from ..errors import ToruError
from .control import Control

TTL = 5.0
MISS_RETRY = 1.0  # after a miss or a failed refresh
TABLE_TIMEOUT = 2.0
UNKNOWN = "_unknown"


class RouteTable:
    """See the module docstring."""

    def __init__(self, control: Control, ttl: float = TTL) -> None:
        self.control = control
        self.ttl = ttl
        self._plugins: dict[str, str] = {}
        self._at = -math.inf
        self._refresh: asyncio.Task[None] | None = None

    async def plugin_for(self, route: str) -> str:
        """The id of the plugin serving ``route``, or ``UNKNOWN``."""
        plugin = self._plugins.get(route)
        age = time.monotonic() - self._at
        if plugin is None:
            if age > MISS_RETRY:
                await asyncio.shield(self._refreshing())
                plugin = self._plugins.get(route)
        elif age > self.ttl:
            self._refreshing()  # PERF: in the background; this request keeps the old label
        return plugin or UNKNOWN

    def _refreshing(self) -> asyncio.Task[None]:
        if self._refresh is None or self._refresh.done():
            self._at = time.monotonic()
            self._refresh = asyncio.get_running_loop().create_task(self._load())
        return self._refresh

    async def _load(self) -> None:
        try:
            plugins = await self.control.call("list", {}, TABLE_TIMEOUT)
            self._plugins = {
                str(p["route"]): str(p["id"])
                for p in plugins
                if isinstance(p, dict) and p.get("route") and p.get("id")
            }
        except (ToruError, OSError, KeyError, TypeError):
            pass  # a restarting supervisor: keep the names, ask again after MISS_RETRY
