"""The worker's one route table: route -> plugin id (metric labels) and, for plugins the
direct channel may reach, their socket and process.

It is the supervisor's, copied: ``list`` names every plugin's route, ``routes`` the ones a
worker may send straight to the plugin (docs/control-protocol.md, "Direct channel"); both
are asked for together, pipelined on the worker's one control connection. PERF: the copy is
checked against ``run/routes.gen`` (8 bytes of a shared mapping, no syscall) on every
request and fetched again only when the supervisor bumped it, by one refresh shared by every
request that noticed. Without the counter file (a supervisor that has not started yet) the
table is fetched at most every ``RETRY_AFTER`` seconds. An unknown route gets the label
``_unknown``, so clients cannot create label values.
"""

from __future__ import annotations

import asyncio
import mmap
import time
from pathlib import Path
from typing import NamedTuple

from ..errors import ToruError
from ..supervisor.route_generation import SIZE, open_generation
from .control import Control

RETRY_AFTER = 1.0  # after a failed refresh or while the counter file is missing
TABLE_TIMEOUT = 2.0


class Route(NamedTuple):
    plugin: str
    socket: str | None  # set when the direct channel may send to the plugin itself
    pid: int
    binary: bool = False  # the plugin takes bodies as raw bytes (``binary_bodies``)


class RouteTable:
    """See the module docstring. ``direct=False`` skips the ``routes`` op (no sockets)."""

    def __init__(self, control: Control, generation_file: Path, direct: bool = True) -> None:
        self.control = control
        self.generation_file = generation_file
        self.direct = direct
        self._map: mmap.mmap | None = None
        self._gen = b""
        self._at = 0.0
        self._failing = False  # the last refresh failed, or there is no counter to follow
        self._routes: dict[str, Route] = {}
        self._refresh: asyncio.Task[None] | None = None

    async def get(self, route: str) -> Route | None:
        """The current entry for ``route`` (None: unknown, the supervisor answers 404)."""
        mapping = self._map
        if mapping is not None and mapping[:SIZE] == self._gen:
            return self._routes.get(route)  # PERF: the common case, no await, no syscall
        if not self._failing or time.monotonic() - self._at > RETRY_AFTER:
            if mapping is None:
                mapping = self._map = open_generation(self.generation_file)
            gen = mapping[:SIZE] if mapping is not None else b""
            await asyncio.shield(self._refreshing(gen))
        return self._routes.get(route)

    def invalidate(self) -> None:
        """Fetch the table again before the next request (a plugin connection failed). The
        mapping is re-opened too: a supervisor started on a fresh ``run/`` made a new file."""
        self._gen = b""
        self._map = None
        self._failing = False

    def _refreshing(self, gen: bytes) -> asyncio.Task[None]:
        if self._refresh is None or self._refresh.done():
            self._at = time.monotonic()
            self._refresh = asyncio.get_running_loop().create_task(self._load(gen))
        return self._refresh

    async def _load(self, gen: bytes) -> None:
        try:
            if self.direct:
                plugins, table = await asyncio.gather(
                    self.control.call("list", {}, TABLE_TIMEOUT),
                    self.control.call("routes", {}, TABLE_TIMEOUT),
                )
                direct = {
                    str(r): (str(e["socket"]), int(e["pid"]), e.get("binary_bodies") is True)
                    for r, e in table["routes"].items()
                }
            else:
                plugins, direct = await self.control.call("list", {}, TABLE_TIMEOUT), {}
            routes = {}
            for p in plugins:
                if isinstance(p, dict) and p.get("route") and p.get("id"):
                    sock, pid, binary = direct.get(p["route"], (None, 0, False))
                    routes[str(p["route"])] = Route(str(p["id"]), sock, pid, binary)
        except (ToruError, OSError, KeyError, TypeError, ValueError, AttributeError):
            # A restarting (or older) supervisor: keep the names, send nothing direct, and
            # ask again in a second.
            self._routes = {r: e._replace(socket=None) for r, e in self._routes.items()}
            self._gen = b""
            self._failing = True
            return
        self._routes = routes
        self._gen = gen
        self._failing = not gen
