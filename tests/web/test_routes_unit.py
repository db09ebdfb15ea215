"""The worker's route table (toru/wsgi/routes.py): route -> plugin id for metric labels, from
``list``, without a control call per request."""

from __future__ import annotations

import asyncio

from toru.errors import SupervisorUnavailable
from toru.wsgi import routes
from toru.wsgi.routes import UNKNOWN, RouteTable


class FakeControl:
    def __init__(self) -> None:
        self.plugins = [{"id": "hello", "route": "/hello"}]
        self.calls = 0
        self.down = False

    async def call(self, op, args=None, timeout=None):
        assert op == "list"
        self.calls += 1
        if self.down:
            raise SupervisorUnavailable("restarting")
        return list(self.plugins)


def test_labels_come_from_one_list_call_and_unknown_routes_are_bounded(monkeypatch):
    async def scenario():
        control = FakeControl()
        table = RouteTable(control)
        assert await table.plugin_for("/hello") == "hello"
        for _ in range(20):
            assert await table.plugin_for("/hello") == "hello"
            assert await table.plugin_for("/nope") == UNKNOWN
        assert control.calls == 1  # a miss asks again at most once a MISS_RETRY

        control.plugins.append({"id": "new", "route": "/new"})
        monkeypatch.setattr(routes, "MISS_RETRY", 0.0)
        assert await table.plugin_for("/new") == "new"  # a miss after the retry interval
        assert control.calls == 2

        control.down = True
        assert await table.plugin_for("/gone") == UNKNOWN
        assert await table.plugin_for("/hello") == "hello"  # a failed refresh keeps the names

        control.down = False
        control.plugins = [{"id": "other", "route": "/hello"}]
        table.ttl = 0.0
        assert await table.plugin_for("/hello") == "hello"  # stale: refreshed in the background
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert await table.plugin_for("/hello") == "other"

    asyncio.run(scenario())
