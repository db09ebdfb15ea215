"""A protocol v1 plugin with named misbehaviour modes (go-plugin style), for checker tests.

Run as ``misbehaving_plugin.py MODE``: ``good`` behaves; ``bad-metadata``, ``no-socket``,
``wrong-id``, ``no-exit``, ``crash-on-garbage``, ``bad-status`` (status ``"200"``, a
string), ``false-multi`` (declares ``multi_connection`` but serves one connection at a
time) and ``false-binary`` (declares ``binary_bodies`` but answers in text frames) each break
one rule; ``no-status`` leaves ``status`` out of its replies (absent = 200).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from toru_plugin_api.blocking import Channel
from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import make_message

MODE = sys.argv[1] if len(sys.argv) > 1 else "good"
META = {"id": "misbehave", "name": "Misbehave", "version": "0", "icon": "", "route": "/mis"}


def main() -> int:
    if "--metadata" in sys.argv:
        if MODE == "bad-metadata":
            META["route"] = "/../etc"
        if MODE == "false-multi":
            META["multi_connection"] = True
        if MODE == "false-binary":
            META["capabilities"] = ["binary_bodies"]
        print(json.dumps(META))
        return 0
    path = os.environ.get("TORU_PLUGIN_SOCKET")
    if not path:
        sys.stderr.write("needs TORU_PLUGIN_SOCKET\n")
        return 1
    if MODE == "no-socket":
        time.sleep(60)
        return 0
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    os.chmod(path, 0o600)
    srv.listen(1)
    while True:
        conn, _ = srv.accept()
        channel = Channel(conn)
        while True:
            try:
                msg = channel.read(None)
            except ProtocolError:
                if MODE == "crash-on-garbage":
                    return 3
                break
            if msg is None:
                break
            payload = msg.get("payload") or {}
            if msg.get("type") == "lifecycle" and payload.get("action") == "shutdown":
                if MODE == "no-exit":
                    continue
                return 0
            if msg.get("type") in ("http", "kv"):
                rid = "nope" if MODE == "wrong-id" else msg.get("request_id")
                body = {"status": 200, "headers": {}, "body": "ok"}
                if MODE == "no-status":
                    del body["status"]
                if MODE == "bad-status":
                    body["status"] = "200"
                if msg["type"] == "kv":
                    body = {"value": None}
                try:
                    channel.send(make_message(msg["type"], body, rid))
                except OSError:  # the client went away: serve the next connection
                    break
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
