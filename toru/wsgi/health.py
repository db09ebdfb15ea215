"""``/healthz`` (supervisor reachable?) and ``/metrics`` (all processes' metrics)."""

from __future__ import annotations

import asyncio
from typing import Any

import falcon
import falcon.asgi

from ..config import Config
from ..errors import ToruError
from . import metrics
from .control import Control
from .http import send_json

PING_TIMEOUT = 2.0


class HealthResource:
    auth = "public"

    def __init__(self, control: Control) -> None:
        self.control = control

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        try:
            reply = await self.control.call("ping", {}, PING_TIMEOUT)
        except (ToruError, OSError) as exc:
            resp.set_header("Retry-After", "1")
            send_json(
                resp,
                {
                    "status": "unavailable",
                    "error": "supervisor_unavailable",
                    "message": f"the supervisor does not answer: {exc}",
                },
                status=503,
            )
            return
        problem = store_problem(reply)
        if problem is not None:
            send_json(
                resp,
                {"status": "unavailable", "error": "store_unavailable", "message": problem},
                status=503,
            )
            return
        send_json(resp, {"status": "ok"})

    on_head = on_get


def store_problem(ping_reply: Any) -> str | None:
    """What is wrong with the database according to the supervisor's ``ping`` reply, if
    anything (``{"store": {"ok": false, "error": ...}}``); an older reply has no ``store``."""
    store = ping_reply.get("store") if isinstance(ping_reply, dict) else None
    if isinstance(store, dict) and store.get("ok") is False:
        return f"the database does not work: {store.get('error') or 'unknown error'}"
    return None


class LiveResource:
    """``/livez``: the worker itself answers (no supervisor, no database).

    Liveness for a load balancer or systemd watchdog, distinct from ``/healthz`` (readiness:
    the supervisor answers); also the bare-Falcon baseline of the proxy benchmark.
    """

    auth = "public"

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send_json(resp, {"status": "ok"})

    on_head = on_get


class MetricsResource:
    """Public if ``metrics.public``; else a session/bearer user or a direct loopback client."""

    auth = "metrics"

    def __init__(self, config: Config) -> None:
        self.metrics_dir = str(config.metrics_dir)

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        metrics.flush()  # this worker's own last updates (on the loop: they are the loop's)
        # NOTE: merging every process's files reads the whole directory: off the loop.
        data, ctype = await asyncio.to_thread(metrics.render, self.metrics_dir)
        resp.content_type = ctype
        resp.cache_control = ["no-store"]
        resp.data = data
