"""A plugin that attacks its host: every ``GET /attack`` tries each thing a plugin must not
be able to do and answers what it reached, attempt by attempt.

Standard library only, protocol v1 by hand (like examples/raw-python), so it runs on any
``python3`` the plugin user can execute. Its id is its file name (``attack-a.binary`` is
``attack-a``); what to attack comes from its ``[plugins.<id>.config]`` in toru.toml
(``TORU_PLUGIN_CONFIG``): ``home`` and ``other`` (another plugin's id).

Each result is ``"reached"`` or the errno name that stopped it (``"EACCES"``).
"""

import errno
import json
import os
import socket
import struct
import sys

PLUGIN_ID = os.path.basename(sys.argv[0]).removesuffix(".binary")
MAX_FRAME = 16 * 1024 * 1024


def outcome(attempt):
    """Run ``attempt()``: "reached", or the name of the errno that stopped it."""
    try:
        attempt()
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "reached"


def read_file(path):
    def attempt():
        with open(path, "rb") as f:
            f.read(1)

    return attempt


def connect(path, forged=False):
    def attempt():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(path)
            if forged:  # what a worker would send, as the admin
                inner = {"method": "GET", "path": "/", "headers": {"X-Toru-User": "admin"}}
                send(s, {"type": "http", "request_id": "x", "payload": {"payload": inner}})

    return attempt


def create(path):
    def attempt():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
        os.close(fd)
        os.unlink(path)

    return attempt


def attacks():
    config = json.loads(os.environ.get("TORU_PLUGIN_CONFIG") or "{}")
    home = config["home"]
    var = os.path.join(home, "var")
    run = os.path.join(home, "run")
    other = config.get("other")
    tries = {
        "control_socket": connect(os.path.join(run, "supervisor.sock")),
        "database": read_file(os.path.join(var, "toru.db")),
        "database_wal": read_file(os.path.join(var, "toru.db-wal")),
        "database_shm": read_file(os.path.join(var, "toru.db-shm")),
        "supervisor_log": read_file(os.path.join(var, "log", "plugin-supervisor.log")),
        "own_log": read_file(os.path.join(var, "log", "plugins", PLUGIN_ID + ".log")),
        "plugin_state": read_file(os.path.join(home, "plugins", ".metadata", "config.json")),
        "initial_password": read_file(os.path.join(var, "initial-admin-password")),
        "list_run": lambda: os.listdir(run),
        "write_plugins": create(os.path.join(home, "plugins", "evil.binary")),
        "write_home": create(os.path.join(home, "evil")),
    }
    if other:
        other_dir = os.path.join(run, "p", other)
        tries["other_socket"] = connect(os.path.join(other_dir, "plugin.sock"), forged=True)
        tries["other_log"] = read_file(os.path.join(var, "log", "plugins", other + ".log"))
    result = {name: outcome(attempt) for name, attempt in tries.items()}
    result["kv"] = kv_roundtrip()  # what it may do: its own KV, through its own channel
    result["uid"] = os.getuid()
    result["gid"] = os.getgid()
    result["groups"] = os.getgroups()
    return result


def kv_roundtrip():
    """Set then get a key over ``TORU_KV_FD``: the value read back, or the error."""
    try:
        kv = socket.socket(fileno=int(os.environ["TORU_KV_FD"]))
        try:
            for rid, action in (("k1", "set"), ("k2", "get")):
                inner = {"action": action, "key": "probe", "value": "from " + PLUGIN_ID}
                send(kv, {"type": "kv", "request_id": rid, "payload": {"payload": inner}})
                head = recv_exact(kv, 4)
                reply = json.loads(recv_exact(kv, struct.unpack(">I", head)[0]))
            return reply["payload"].get("value")
        finally:
            kv.detach()  # keep the fd for the next request
    except (OSError, KeyError, TypeError, ValueError) as exc:
        return "error: " + str(exc)


def recv_exact(conn, n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def send(conn, msg):
    data = json.dumps(msg).encode()
    conn.sendall(struct.pack(">I", len(data)) + data)


def serve(conn):
    """One host connection, messages in order; True when told to shut down."""
    while True:
        head = recv_exact(conn, 4)
        if head is None:
            return False
        (size,) = struct.unpack(">I", head)
        if size > MAX_FRAME:
            return False
        body = recv_exact(conn, size)
        if body is None:
            return False
        msg = json.loads(body)
        payload = msg.get("payload") or {}
        if msg.get("type") == "lifecycle" and payload.get("action") == "shutdown":
            return True
        if msg.get("type") == "http":
            inner = payload.get("payload") or {}
            status, answer = 200, {"ok": True}
            if inner.get("path", "").split("?")[0] == "/attack":
                answer = attacks()
            elif inner.get("path", "").split("?")[0] != "/":
                status, answer = 404, {"error": "not_found"}
            reply = {"status": status, "headers": {"Content-Type": "application/json"}}
            reply["body"] = json.dumps(answer)
            send(conn, {"type": "http", "request_id": msg.get("request_id"), "payload": reply})


def main():
    if "--metadata" in sys.argv[1:]:
        meta = {"id": PLUGIN_ID, "name": "Attacker", "version": "1.0.0", "icon": "x"}
        meta["route"] = "/" + PLUGIN_ID
        print(json.dumps(meta))
        return 0
    path = os.environ["TORU_PLUGIN_SOCKET"]
    old = os.umask(0o177)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    os.umask(old)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn:
            if serve(conn):
                return 0


if __name__ == "__main__":
    sys.exit(main())
