"""A stdlib-only test plugin with named misbehaviour modes (the go-plugin way).

Usage: ``misbehave.py MODE PLUGIN_ID [--metadata]``; the fixture wraps it into
``<name>.binary`` shell scripts. It speaks protocol v1 like an original plugin: one
connection at a time, messages handled in order (except mode ``ooo``, which answers each
request from its own thread, so replies come back out of order).

Modes: good, ooo, close-once, crash-start, hang, garbage, huge-frame, no-socket, ignore-shutdown,
flood, bad-metadata, metadata-timeout, metadata-fail, metadata-flaky (``--metadata`` hangs
unless ``.<id>.metadata-ok`` exists in the plugin directory), metadata-slow (``--metadata``
sleeps ``MISBEHAVE_METADATA_SLEEP`` seconds, and the plugin ``MISBEHAVE_START_SLEEP`` seconds
before it creates its socket; otherwise like good).
HTTP paths (good/ooo/flood/ignore-shutdown): /echo, /pid, /sleep?s=F, /crash, /raise,
/fork[?escape=1|setsid=1] (/pid and /sleep also say MISBEHAVE_VERSION), /kv/get?key=K, /kv/set?key=K&value=V, /kv/list, /stderr?n=N,
/say?msg=M (one stderr line), /alloc?mb=N (allocate and keep N MiB), /health.
/reset-exit closes its connection with bytes unread (the host reads ECONNRESET), then exits 4
0.5 s later, as a kill -9 looks on a busy machine; /reset-stay does the same and keeps running
(waiting for a new connection), as a one-connection plugin closing while a request was
already on its way does. /no-status answers without ``status`` (which means 200), /bad-status with the status "teapot".
"""

import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import threading
import time
from urllib.parse import parse_qsl

MODE, PLUGIN_ID = sys.argv[1], sys.argv[2]
HELD = []  # /alloc keeps its memory here
VERSION = os.environ.get("MISBEHAVE_VERSION", "0.1.0")  # /pid reports it (upgrade tests)
ROUTE = os.environ.get("MISBEHAVE_ROUTE_" + PLUGIN_ID.replace("-", "_").upper(), "/" + PLUGIN_ID)


def metadata():
    if MODE == "metadata-timeout":
        time.sleep(3600)
    if MODE == "metadata-flaky" and not os.path.exists(f".{PLUGIN_ID}.metadata-ok"):
        time.sleep(3600)  # answers only while the marker file exists (cwd: the plugin dir)
    if MODE == "metadata-slow":
        time.sleep(float(os.environ.get("MISBEHAVE_METADATA_SLEEP", "2")))
    if MODE == "metadata-fail":
        print("cannot describe myself", file=sys.stderr)
        sys.exit(2)
    meta = {
        "id": PLUGIN_ID,
        "name": f"Test {MODE}",
        "version": VERSION,
        "icon": "T",
        "route": ROUTE,
    }
    if MODE == "bad-metadata":
        meta["id"] = "not a valid id!"
    print(json.dumps(meta))


def read_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_msg(conn):
    head = read_exact(conn, 4)
    if head is None:
        return None
    (size,) = struct.unpack(">I", head)
    body = read_exact(conn, size)
    return None if body is None else json.loads(body)


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


WRITE_LOCK = threading.Lock()
CLOSED_ONCE = []


def send(conn, obj):
    with WRITE_LOCK:
        conn.sendall(frame(obj))


KV_LOCK = threading.Lock()
KV_SOCK = None
KV_SEQ = [0]


def kv(action, key="", value=None):
    global KV_SOCK
    with KV_LOCK:
        if KV_SOCK is None:
            KV_SOCK = socket.socket(fileno=int(os.environ["TORU_KV_FD"]))
        KV_SEQ[0] += 1
        payload = {"action": action, "key": key}
        if value is not None:
            payload["value"] = value
        KV_SOCK.sendall(
            frame({"type": "kv", "request_id": f"k{KV_SEQ[0]}", "payload": {"payload": payload}})
        )
        return read_msg(KV_SOCK)["payload"]


def handle_http(msg):
    p = msg["payload"]["payload"]
    path = p["path"]
    route, _, qs = path.partition("?")
    q = dict(parse_qsl(qs))
    status, body = 200, {}
    if route == "/health":
        body = {"status": "ok"}
    elif route == "/echo" or route.startswith("/echo/"):
        body = {
            "method": p["method"],
            "path": path,
            "headers": p.get("headers", {}),
            "body": p.get("body", ""),
            "body_encoding": p.get("body_encoding"),
        }
    elif route == "/pid":
        body = {"pid": os.getpid(), "pgid": os.getpgid(0), "version": VERSION}
    elif route == "/sleep":
        time.sleep(float(q.get("s", "1")))
        body = {"slept": float(q.get("s", "1")), "pid": os.getpid(), "version": VERSION}
    elif route == "/crash":
        print("about to crash mid-request", file=sys.stderr, flush=True)
        os._exit(3)
    elif route == "/raise":  # dies of an exception: its traceback on stderr, exit 1
        import traceback

        try:
            raise RuntimeError("plugin blew up")
        except RuntimeError:
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
    elif route == "/fork":
        child = os.fork()
        if child == 0:
            os.setpgid(0, 0) if q.get("escape") else None
            os.setsid() if q.get("setsid") else None  # leaves the session and the group
            time.sleep(3600)
            os._exit(0)
        body = {"grandchild": child}
    elif route == "/kv/get":
        body = kv("get", q["key"])
    elif route == "/kv/set":
        body = kv("set", q["key"], q["value"])
    elif route == "/kv/list":
        body = kv("list")
    elif route == "/stderr":
        for i in range(int(q.get("n", "10"))):
            print(f"line {i}", file=sys.stderr)
        sys.stderr.flush()
        body = {"written": int(q.get("n", "10"))}
    elif route == "/say":
        print(q.get("msg", ""), file=sys.stderr, flush=True)
    elif route == "/alloc":
        HELD.append(bytearray(b"\x01") * int(float(q.get("mb", "1")) * 1024 * 1024))  # touched
        body = {"held_mb": sum(len(b) for b in HELD) // (1024 * 1024)}
    elif route == "/json-log":
        print(
            json.dumps({"level": "error", "message": "structured", "code": 7}),
            file=sys.stderr,
            flush=True,
        )
    elif route == "/no-status":
        status, body = None, {"status": "absent"}
    elif route == "/bad-status":
        status, body = "teapot", {}
    else:
        status, body = 404, {"error": "not_found"}
    payload = {"status": status, "headers": {"Content-Type": "application/json"}}
    payload["body"] = json.dumps(body)
    if status is None:
        del payload["status"]
    return {"type": "http", "request_id": msg.get("request_id"), "payload": payload}


def reset_connection(conn, what):
    # Wait until the host sent more (the next request): closing a Unix socket with bytes
    # unread makes the other side read ECONNRESET.
    print(f"{what}: waiting for the next request", file=sys.stderr, flush=True)
    while struct.unpack("i", fcntl.ioctl(conn, termios.FIONREAD, b"\0\0\0\0"))[0] == 0:
        time.sleep(0.01)
    conn.close()


def reset_then_exit(conn):
    reset_connection(conn, "reset-exit")
    time.sleep(0.5)
    os._exit(4)


def serve_connection(conn):
    while True:
        msg = read_msg(conn)
        if msg is None:
            return
        t = msg.get("type")
        if t == "lifecycle":
            if msg["payload"].get("action") == "shutdown" and MODE != "ignore-shutdown":
                sys.exit(0)
            continue
        if t != "http":
            continue
        if msg["payload"]["payload"]["path"] == "/reset-exit":
            reset_then_exit(conn)
        if msg["payload"]["payload"]["path"] == "/reset-stay":
            reset_connection(conn, "reset-stay")
            return
        if MODE == "hang":
            continue
        if MODE == "garbage":
            conn.sendall(struct.pack(">I", 5) + b"hello")
            continue
        if MODE == "huge-frame":
            conn.sendall(b"\xff\xff\xff\xff" + b"x" * 100)
            continue
        if MODE == "ooo":
            threading.Thread(target=lambda m=msg: send(conn, handle_http(m)), daemon=True).start()
            continue
        send(conn, handle_http(msg))
        if MODE == "close-once" and not CLOSED_ONCE:
            CLOSED_ONCE.append(True)
            return


def flood():
    line = "flood " + "x" * 200
    while True:
        print(line, file=sys.stderr)


def main():
    if "--metadata" in sys.argv[3:]:
        metadata()
        return
    if MODE == "crash-start":
        print("fatal: crashing at start", file=sys.stderr, flush=True)
        sys.exit(1)
    if MODE == "ignore-shutdown":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if MODE == "no-socket":
        time.sleep(3600)
        return
    print(
        json.dumps({"level": "info", "message": f"{PLUGIN_ID} starting", "mode": MODE}),
        file=sys.stderr,
        flush=True,
    )
    print(f"hello on stdout from {PLUGIN_ID}", flush=True)
    if MODE == "flood":
        threading.Thread(target=flood, daemon=True).start()
    if MODE == "metadata-slow":
        time.sleep(float(os.environ.get("MISBEHAVE_START_SLEEP", "0")))
    path = os.environ["TORU_PLUGIN_SOCKET"]
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(4)
    while True:
        conn, _ = srv.accept()
        serve_connection(conn)
        conn.close()


if __name__ == "__main__":
    main()
