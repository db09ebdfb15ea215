"""A plugin whose frontend bundle misbehaves on purpose, for the UI's error panel tests.

The misbehaviour mode is the plugin id, given as ``--as ID`` by the launcher, so one script
serves several plugins: ``ui-throw-load`` (bundle.js throws while it is evaluated),
``ui-throw-mount`` (bundle registers, but ``mount()`` throws), ``ui-api-only`` (no bundle:
404, an API-only plugin) and ``ui-view-ok`` (a small working view). The process itself is healthy:
it speaks protocol v1 with the shared codec, answers the health probe and logs a line per
request, so only the browser side is broken.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from toru_plugin_api.codec import FrameReader, write_frame
from toru_plugin_api.messages import (
    HttpResponse,
    http_response_message,
    parse_http_request,
    parse_message,
)

MODES = {
    "ui-throw-load": (
        "Throws On Load",
        'throw new Error("deliberate failure while loading the bundle");\n',
    ),
    "ui-throw-mount": (
        "Throws In Mount",
        "window.ToruPlugins = window.ToruPlugins || {};\n"
        'window.ToruPlugins["ui-throw-mount"] = {\n'
        "  mount(container, api) {\n"
        '    container.textContent = "half-rendered";\n'
        '    throw new Error("deliberate failure in mount");\n'
        "  },\n"
        "  unmount(container) {},\n"
        "};\n",
    ),
    "ui-api-only": ("API Only", None),
    "ui-view-ok": (
        "Small View",
        "window.ToruPlugins = window.ToruPlugins || {};\n"
        'window.ToruPlugins["ui-view-ok"] = {\n'
        "  mount(container, api) {\n"
        '    const p = document.createElement("p");\n'
        '    p.dataset.testid = "small-view";\n'
        '    p.textContent = "small view mounted";\n'
        "    container.append(p);\n"
        "  },\n"
        "  unmount(container) { container.replaceChildren(); },\n"
        "};\n",
    ),
}


def log(level: str, message: str) -> None:
    print(json.dumps({"level": level, "message": message}), file=sys.stderr, flush=True)


def answer(path: str) -> HttpResponse:
    if path.startswith("/bundle.js") and BUNDLE is not None:
        return HttpResponse.text(BUNDLE, content_type="application/javascript; charset=utf-8")
    if path.startswith("/health"):
        return HttpResponse.json({"status": "ok"})
    return HttpResponse.json({"error": "not_found", "message": path}, status=404)


def serve(conn: socket.socket) -> bool:
    """Handle one connection in order; False once a shutdown arrived."""
    reader = FrameReader(conn)
    while True:
        raw = reader.read()
        if raw is None:
            return True
        msg = parse_message(raw)
        if msg.type == "lifecycle":
            if msg.payload.get("action") == "shutdown":
                log("info", "shutdown received")
                return False
            log("info", f"{PLUGIN_ID} initialised")
        elif msg.type == "http":
            req = parse_http_request(msg.payload)
            log("info", f"{req.method} {req.path}")
            write_frame(conn, http_response_message(msg.request_id, answer(req.path)))


PLUGIN_ID = sys.argv[sys.argv.index("--as") + 1] if "--as" in sys.argv else "ui-throw-load"
NAME, BUNDLE = MODES[PLUGIN_ID]


def main() -> None:
    if "--metadata" in sys.argv:
        meta = {
            "id": PLUGIN_ID,
            "name": NAME,
            "version": "0.1.0",
            "author": "Toru tests",
            "icon": "💥",
            "route": f"/{PLUGIN_ID}",
        }
        print(json.dumps(meta))
        return
    path = os.environ["TORU_PLUGIN_SOCKET"]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        with conn:
            if not serve(conn):
                return


if __name__ == "__main__":
    main()
