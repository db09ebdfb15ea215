"""Plugins for the large-body tests (tests/web/test_large_bodies.py), installed as binaries.

- ``bodies-sdk`` (route ``/bsdk``): an SDK plugin, so ``binary_bodies`` is declared for it.
  ``POST /echo`` answers the request body as it came, with ``X-Binary-Frame: 1`` when the
  request came in a binary frame; ``GET /bytes/{n}`` answers ``pattern(n)`` (with the same
  header when it answers in a binary frame).
- ``bodies-v1`` (route ``/bv1``): the original protocol by hand, standard library only (no
  SDK, no binary frames: a frame with the top bit of its length set would be over its
  16 MiB limit and end the connection). ``POST /echo`` answers the JSON ``body`` and
  ``body_encoding`` it got, unchanged; ``GET /bytes?n=N`` answers ``pattern(N)`` base64.
- ``bodies-liar`` (route ``/bliar``): declares ``binary_bodies`` and answers in binary frames
  by hand; ``GET /liar`` gets a frame whose JSON length is larger than the frame.

``pattern(n)`` holds every byte value, 0xff first: never valid UTF-8.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
MAX_FRAME = 16 * 1024 * 1024
FLAG = 0x80000000
IDS = ("bodies-sdk", "bodies-v1", "bodies-liar")


def pattern(n: int) -> bytes:
    """``n`` bytes that are not UTF-8 (0xff first) and not all the same."""
    block = bytes(range(255, -1, -1))
    return (block * (n // 256 + 1))[:n]


def install(plugins_dir: Path) -> dict[str, Path]:
    """Write ``<id>.binary`` for each plugin into ``plugins_dir``."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    out = {}
    for plugin_id in IDS:
        dst = plugins_dir / f"{plugin_id}.binary"
        dst.write_text(
            f"#!{sys.executable}\n"
            "import sys\n"
            f"sys.path.insert(0, {str(ROOT)!r})\n"
            "from tests.web.bodies_plugins import main\n"
            f"main({plugin_id!r})\n"
        )
        dst.chmod(0o755)
        out[plugin_id] = dst
    return out


def main(plugin_id: str) -> None:
    if plugin_id == "bodies-sdk":
        sdk_main()
    else:
        raw_main(plugin_id)


# --------------------------------------------------------------------------- SDK


def sdk_main() -> None:
    from toru_plugin_api import HttpRequest, HttpResponse, ToruPlugin, route, run

    class BodiesPlugin(ToruPlugin):
        metadata = {"id": "bodies-sdk", "name": "Bodies SDK", "version": "1", "route": "/bsdk"}

        @route("POST", "/echo")
        def echo(self, req: HttpRequest) -> HttpResponse:
            headers = {"Content-Type": "application/octet-stream"}
            if req.binary:
                headers["X-Binary-Frame"] = "1"
            return HttpResponse(200, headers, req.body)

        @route("GET", "/bytes/{n}")
        def some_bytes(self, req: HttpRequest) -> HttpResponse:
            headers = {"Content-Type": "application/octet-stream"}
            if req.binary:  # answered in a binary frame too
                headers["X-Binary-Frame"] = "1"
            return HttpResponse(200, headers, pattern(int(req.params["n"])))

    run(BodiesPlugin())


# --------------------------------------------------------------------------- by hand


def _exact(conn: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read(conn: socket.socket, binary: bool) -> tuple[dict, bytes | None] | None:
    head = _exact(conn, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    is_binary = bool(size & FLAG) and binary
    size &= ~FLAG if binary else 0xFFFFFFFF
    if size > MAX_FRAME:
        return None  # an original plugin: a frame over its limit ends the connection
    frame = _exact(conn, size)
    if frame is None:
        return None
    if not is_binary:
        return json.loads(frame), None
    (json_len,) = struct.unpack(">I", frame[:4])
    return json.loads(frame[4 : 4 + json_len]), frame[4 + json_len :]


def _text_frame(obj: dict) -> bytes:
    data = json.dumps(obj).encode()
    return struct.pack(">I", len(data)) + data


def _binary_frame(obj: dict, body: bytes, json_len_delta: int = 0) -> bytes:
    data = json.dumps(obj).encode()
    size = 4 + len(data) + len(body)
    return struct.pack(">II", size | FLAG, len(data) + json_len_delta) + data + body


def _answer_v1(rid: object, p: dict) -> bytes:
    path = p.get("path", "/")
    route, _, qs = path.partition("?")
    payload: dict = {"status": 200, "headers": {"Content-Type": "application/octet-stream"}}
    if route == "/echo":
        payload["body"] = p.get("body", "")
        if p.get("body_encoding"):
            payload["body_encoding"] = p["body_encoding"]
    elif route == "/bytes":
        n = int(qs.partition("=")[2] or "0")
        payload["body"] = base64.b64encode(pattern(n)).decode()
        payload["body_encoding"] = "base64"
    else:
        payload = {"status": 404, "headers": {}, "body": ""}
    return _text_frame({"type": "http", "request_id": rid, "payload": payload})


def _answer_liar(rid: object, p: dict, body: bytes | None) -> bytes:
    route = p.get("path", "/").partition("?")[0]
    msg = {"type": "http", "request_id": rid, "payload": {"status": 200, "headers": {}}}
    if body is None:  # a JSON request (the health probe): answered in JSON
        return _text_frame({**msg, "payload": {"status": 200, "body": "{}"}})
    if route == "/liar":  # the JSON length claims more than the frame holds
        return _binary_frame(msg, b"tail", json_len_delta=1000)
    return _binary_frame(msg, b"ok:" + body)


def raw_main(plugin_id: str) -> None:
    liar = plugin_id == "bodies-liar"
    if "--metadata" in sys.argv:
        meta = {"id": plugin_id, "name": plugin_id, "version": "1", "route": "/bv1"}
        if liar:
            meta.update(route="/bliar", capabilities=["binary_bodies"])
        print(json.dumps(meta))
        return
    path = os.environ["TORU_PLUGIN_SOCKET"]
    if os.path.exists(path):
        os.unlink(path)
    os.umask(0o177)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)
    while True:  # one connection at a time, messages in order: the original way
        conn, _ = srv.accept()
        with conn:
            while True:
                got = _read(conn, binary=liar)
                if got is None:
                    break
                msg, body = got
                if msg.get("type") == "lifecycle":
                    if msg.get("payload", {}).get("action") == "shutdown":
                        sys.exit(0)
                    continue
                if msg.get("type") != "http":
                    continue
                p = msg["payload"]["payload"]
                rid = msg.get("request_id")
                conn.sendall(_answer_liar(rid, p, body) if liar else _answer_v1(rid, p))
