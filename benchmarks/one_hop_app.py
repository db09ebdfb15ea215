"""Scenario (p): the lean floor of a one-hop proxy, for scale.

A plain ASGI callable (no Falcon, no auth, no metrics, no header rules) on the same gunicorn
``asgi`` worker, forwarding every request over one pipelined connection per worker (Toru's
own codec and asyncio adapter, ``toru_plugin_api.aio.FramedProtocol``) straight to the
minimal plugin, no supervisor in between. It is what issue 12's "100-line prototype"
measured: the least CPU a worker -> plugin round trip can cost on this stack. Toru's
(b)/(c) pay, on top of it, the supervisor's relay and the app's rules. A measurement tool,
not a production path.

    ONE_HOP_PLUGIN_SOCKET=S gunicorn -k asgi --asgi-loop uvloop benchmarks.one_hop_app:application
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from toru_plugin_api.aio import FramedProtocol
from toru_plugin_api.messages import lifecycle_init

SOCKET = os.environ.get("ONE_HOP_PLUGIN_SOCKET", "")
_conn: FramedProtocol | None = None


async def _connection() -> FramedProtocol:
    global _conn
    if _conn is None or _conn.closed:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_unix_connection(FramedProtocol, SOCKET)
        conn.send(lifecycle_init(f"one-hop-{os.getpid()}", SOCKET, os.devnull))
        _conn = conn
    return _conn


async def _lifespan(receive: Any, send: Any) -> None:
    while True:
        event = await receive()
        if event["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif event["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        await _lifespan(receive, send)
        return
    conn = await _connection()
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    inner = {"method": scope["method"], "path": "/json", "headers": headers, "body": ""}
    reply = await conn.request({"type": "http", "payload": {"payload": inner}}, 10.0)
    payload = reply["payload"]
    body = payload.get("body", "").encode()
    out = [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in payload["headers"].items()
    ]
    out.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": payload["status"], "headers": out})
    await send({"type": "http.response.body", "body": body})
