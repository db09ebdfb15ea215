#!/usr/bin/env python3
"""The least a Python plugin can do per request: protocol v1 by hand on uvloop, no SDK.

It is not an example to copy (see examples/raw-python for that): it exists so the benchmark
can measure the supervisor with a plugin that costs ~8 µs per message, where the SDK plugin
costs ~20-30, and so see the supervisor's own capacity (``e_hop_32_minimal``). It answers
``GET /json`` with the benchmark's small body, the host's health probe, ``shutdown``; any
other request gets 404. Several connections at once, replies written once per read.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys

try:
    import ujson as _json
except ImportError:  # pragma: no cover
    _json = json

METADATA = {
    "id": "bench-minimal",
    "name": "Benchmark (minimal plugin)",
    "version": "1.0.0",
    "author": "Toru benchmarks",
    "icon": "⏱",
    "route": "/bench-minimal",
}
MAX_FRAME = 16 * 1024 * 1024
HEADER = struct.Struct(">I")
SMALL = '{"message":"hello","pad":"' + "x" * 72 + '"}'  # 100 bytes, as bench_sdk's
JSON_HEADERS = {"Content-Type": "application/json"}


def reply(rid: object, status: int, body: str) -> bytes:
    data = _json.dumps(
        {
            "type": "http",
            "request_id": rid,
            "payload": {"status": status, "headers": JSON_HEADERS, "body": body},
        }
    ).encode()
    return HEADER.pack(len(data)) + data


class Connection(asyncio.Protocol):
    def __init__(self, stop: asyncio.Event) -> None:
        self.buf = b""
        self.stop = stop
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if size > MAX_FRAME:
                self.transport.close()  # type: ignore[union-attr]
                return
            if len(buf) - pos - 4 < size:
                break
            try:
                msg = _json.loads(buf[pos + 4 : pos + 4 + size])
            except ValueError:
                self.transport.close()  # type: ignore[union-attr]
                return
            pos += 4 + size
            kind = msg.get("type")
            if kind == "http":
                req = (msg.get("payload") or {}).get("payload") or {}
                path = str(req.get("path", "")).split("?", 1)[0]
                if req.get("method") == "GET" and path in ("/json", "/health"):
                    out.append(reply(msg.get("request_id"), 200, SMALL))
                else:
                    out.append(reply(msg.get("request_id"), 404, '{"error":"not_found"}'))
            elif kind == "lifecycle" and (msg.get("payload") or {}).get("action") == "shutdown":
                self.stop.set()
        self.buf = buf[pos:]
        if out:
            self.transport.write(b"".join(out))  # type: ignore[union-attr]


async def serve(path: str) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if os.path.exists(path):
        os.unlink(path)
    old = os.umask(0o177)  # the socket is private to Toru's user (0600)
    try:
        server = await loop.create_unix_server(lambda: Connection(stop), path)
    finally:
        os.umask(old)
    async with server:
        await stop.wait()
    if os.path.exists(path):
        os.unlink(path)


def main() -> None:
    if "--metadata" in sys.argv[1:]:
        print(json.dumps(METADATA))
        return
    path = os.environ.get("TORU_PLUGIN_SOCKET")
    if not path:
        sys.exit("bench-minimal is started by Toru (TORU_PLUGIN_SOCKET is not set)")
    try:
        import uvloop

        uvloop.run(serve(path))
    except ImportError:  # pragma: no cover
        asyncio.run(serve(path))


if __name__ == "__main__":
    main()
