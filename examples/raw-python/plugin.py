#!/usr/bin/env python3
"""raw-python: a Toru plugin in one file, standard library only, no SDK.

It speaks protocol v1 by hand, in the style of the original Toru plugins: one connection at
a time, messages handled in order. Read it to see the whole wire format:

  frame    = 4-byte big-endian length + that many bytes of UTF-8 JSON
  message  = {"type": "lifecycle"|"http"|"kv", "timestamp", "request_id"?, "payload"}
  http in  = payload.payload = {"method", "path", "headers", "body"}   (note the nesting)
  http out = payload = {"status", "headers", "body"}, same request_id
  kv in    = payload.payload = {"action": "get"|"set"|"delete", "key", "value"?}
  kv out   = payload = {"value": str or null}
"""

import json
import os
import socket
import struct
import sys
import time

METADATA = {
    "id": "raw-python",
    "name": "Raw Python",
    "version": "1.0.0",
    "author": "Toru",
    "icon": "🐍",
    "route": "/raw",
}
MAX_FRAME = 16 * 1024 * 1024  # refuse bigger frames before reading them

BUNDLE = """
(function () {
  window.ToruPlugins = window.ToruPlugins || {};
  window.ToruPlugins["raw-python"] = {
    mount: function (container, api) {
      var root = document.createElement("section");
      root.setAttribute("data-testid", "raw-root");
      var h = document.createElement("h2");
      h.textContent = "🐍 Raw Python";
      var p = document.createElement("p");
      p.textContent = "Loading…";
      root.appendChild(h);
      root.appendChild(p);
      container.appendChild(root);
      container.__rawRoot = root;
      api.fetch("/").then(function (r) { return r.json(); }).then(function (d) {
        p.textContent = d.message + " (requests served: " + d.requests + ")";
      }).catch(function (e) { p.textContent = "Error: " + e.message; });
    },
    unmount: function (container) {
      if (container.__rawRoot) container.__rawRoot.remove();
      container.__rawRoot = null;
    }
  };
})();
"""

store = {}  # this plugin's handle_kv store (in memory)
state = {"instance_id": "", "requests": 0}


def log(level, message, **fields):
    """A JSON log line on stderr: the host keeps its level and fields."""
    entry = {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "level": level,
        "plugin": METADATA["id"],
        "message": message,
    }
    entry.update(fields)
    sys.stderr.write(json.dumps(entry) + "\n")
    sys.stderr.flush()


# ------------------------------------------------------------------ framing


def recv_exact(conn, n):
    """Read exactly n bytes, or return None if the peer closed the connection."""
    chunks = []
    while n:
        chunk = conn.recv(min(n, 65536))
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(conn):
    """Next message as a dict; None on EOF. Raises ValueError on a bad frame."""
    header = recv_exact(conn, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    data = recv_exact(conn, length)
    if data is None:
        return None
    msg = json.loads(data.decode("utf-8"))
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    return msg


def send_message(conn, msg_type, payload, request_id=None):
    msg = {
        "type": msg_type,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "payload": payload,
    }
    if request_id is not None:
        msg["request_id"] = request_id
    data = json.dumps(msg).encode("utf-8")
    conn.sendall(struct.pack(">I", len(data)) + data)


# ------------------------------------------------------------------ handlers


def handle_http(request):
    method = request.get("method", "GET")
    path = request.get("path", "/").split("?", 1)[0]
    state["requests"] += 1
    if method == "GET" and path in ("/", ""):
        body = {
            "message": "Hello from raw Python",
            "instance_id": state["instance_id"],
            "requests": state["requests"],
        }
        return 200, "application/json", json.dumps(body)
    if method == "GET" and path == "/bundle.js":
        return 200, "application/javascript", BUNDLE
    return 404, "application/json", json.dumps({"error": "not_found", "message": path})


def handle_kv(op):
    action, key = op.get("action"), op.get("key")
    if action == "get":
        return store.get(key)
    if action == "set":
        store[key] = op.get("value")
        return store[key]
    if action == "delete":
        store.pop(key, None)
    return None


def serve_connection(conn):
    """Handle one host connection in order. Returns True when asked to shut down."""
    while True:
        try:
            msg = read_message(conn)
        except (ValueError, UnicodeDecodeError) as exc:
            log("warn", "closing connection after a malformed frame", error=str(exc))
            return False
        if msg is None:
            return False
        payload = msg.get("payload") or {}
        if not isinstance(payload, dict):
            continue
        inner = payload.get("payload") if isinstance(payload.get("payload"), dict) else payload
        if msg.get("type") == "lifecycle":
            if payload.get("action") == "init":
                state["instance_id"] = payload.get("instance_id", "")
                log("info", "initialised", instance_id=state["instance_id"])
            elif payload.get("action") == "shutdown":
                log("info", "shutting down")
                return True
        elif msg.get("type") == "http":
            status, ctype, body = handle_http(inner)
            send_message(
                conn,
                "http",
                {"status": status, "headers": {"Content-Type": ctype}, "body": body},
                msg.get("request_id"),
            )
        elif msg.get("type") == "kv":
            send_message(conn, "kv", {"value": handle_kv(inner)}, msg.get("request_id"))


def main():
    if "--metadata" in sys.argv[1:]:
        print(json.dumps(METADATA))
        return 0
    path = os.environ.get("TORU_PLUGIN_SOCKET")
    if not path:
        sys.stderr.write(
            "raw-python is a Toru plugin: the host starts it with "
            "TORU_PLUGIN_SOCKET set. Try --metadata.\n"
        )
        return 1
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is 0600 from the moment it exists
    try:
        server.bind(path)
    finally:
        os.umask(old_umask)
    server.listen(1)
    log("info", "listening", socket=path)
    while True:  # one connection at a time, like the original plugins
        conn, _ = server.accept()
        with conn:
            if serve_connection(conn):
                break
    server.close()
    os.unlink(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
