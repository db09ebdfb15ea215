"""Plugins that make the mistakes new authors make, by mode, for the checker's messages.

Run as ``author_errors_plugin.py MODE``:

- ``stdout-noise``: prints a line on stdout before its ``--metadata`` JSON.
- ``stdout-after``: prints a line on stdout after its ``--metadata`` JSON.
- ``bad-id``: its metadata id is ``Bad_Id!``.
- ``stderr-then-exit``: serves nothing; writes a distinctive line on stderr and exits 3.
- ``metadata-stderr``: ``--metadata`` writes a line on stderr and exits 2.
- ``slow-metadata``: ``--metadata`` sleeps far longer than any test timeout.
- ``bad-header``: answers every request with a header whose value is a number.
- ``init-raises``: an SDK plugin whose ``init`` raises ``ValueError("no api key")``.
- ``config-echo``: an SDK plugin answering ``GET /`` with its ``ctx.config``.
- ``init-echo``: a raw plugin answering every request with the ``init`` payload it got.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from tests import timing
from toru_plugin_api import ToruPlugin, route, run
from toru_plugin_api.codec import FrameReader, ProtocolError, write_frame
from toru_plugin_api.messages import make_message

MODE = sys.argv[1] if len(sys.argv) > 1 else "stdout-noise"
META = {"id": "author-errors", "name": "Author errors", "version": "0", "route": "/ae"}
MARK = "the-distinctive-stderr-line-42"


class InitRaises(ToruPlugin):
    metadata = {**META, "id": "init-raises"}

    async def init(self, ctx):
        raise ValueError("no api key")

    @route("GET", "/")
    def index(self, req):
        return {"ok": True}


class ConfigEcho(ToruPlugin):
    metadata = {**META, "id": "config-echo", "route": "/config-echo"}

    @route("GET", "/")
    def index(self, req):
        return {"config": self.ctx.config}


def serve_raw(body: dict) -> int:
    """One connection at a time; answers every http request with ``body`` (``init-echo``:
    with the payload of the ``init`` it received)."""
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(os.environ["TORU_PLUGIN_SOCKET"])
    srv.listen(1)
    while True:
        conn, _ = srv.accept()
        reader = FrameReader(conn)
        while True:
            try:
                msg = reader.read()
            except ProtocolError:
                break
            if msg is None:
                break
            payload = msg.get("payload") or {}
            if msg.get("type") == "lifecycle":
                if payload.get("action") == "shutdown":
                    return 0
                if payload.get("action") == "init" and MODE == "init-echo":
                    body = {"status": 200, "headers": {}, "body": json.dumps(payload)}
            if msg.get("type") == "http":
                write_frame(conn, make_message("http", body, msg.get("request_id")))
        conn.close()


def main() -> int:
    if MODE == "init-raises":
        run(InitRaises())
    if MODE == "config-echo":
        run(ConfigEcho())
    if "--metadata" in sys.argv:
        if MODE == "stdout-noise":
            print("Loading plugin settings...")
        if MODE == "bad-id":
            META["id"] = "Bad_Id!"
        if MODE == "metadata-stderr":
            sys.stderr.write(f"{MARK}: cannot read settings.ini\n")
            return 2
        if MODE == "slow-metadata":
            time.sleep(timing.scaled(30))
        print(json.dumps(META))
        if MODE == "stdout-after":
            print("metadata printed, bye")
        return 0
    if MODE == "stderr-then-exit":
        sys.stderr.write(f"{MARK}: missing config file /etc/ae.conf\n")
        return 3
    return serve_raw({"status": 200, "headers": {"X-Count": 1}, "body": "ok"})


if __name__ == "__main__":
    sys.exit(main())
