"""What one process hop costs on this machine, before any Toru code runs.

``python -m benchmarks.tools.micro_wakeup [--rounds N] [--requests N] [--gap-us G]``

A blocking client sends one ~130-byte frame at a time over a Unix socket to an echo server
in another process and waits for it to come back, as a gunicorn sync worker does with the
supervisor. Servers, from least to most work per message:

- ``c``: a C ``read``/``write`` loop (built with ``cc`` if there is one; skipped otherwise);
- ``py-blocking``: Python ``recv``/``sendall``;
- ``uvloop-raw``: a uvloop ``Protocol`` echoing the bytes;
- ``uvloop-codec``: the same, decoding the frame with Toru's codec and encoding a reply,
  i.e. the least a Python plugin or relay does per message.

With ``--gap-us G`` the client also burns G µs of Python between requests, the way a real
worker runs other code (its own or its neighbours') while the server sleeps; the server's CPU
per message then grows with nothing else changed: that is the cold-cache cost of a wake-up.
Reported: round-trip p50/p99 and the server's CPU µs per message (from ``/proc``), medians of
the rounds, servers alternated (``ab.alternate``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.procstat import cpu_ticks
from benchmarks.tools import unix_servers
from benchmarks.tools.ab import Variant, alternate, table
from toru_plugin_api.codec import encode

ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")

_C_SOURCE = r"""
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int s = socket(AF_UNIX, SOCK_STREAM, 0), c;
    struct sockaddr_un a;
    char buf[65536];
    ssize_t n;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strncpy(a.sun_path, argv[1], sizeof a.sun_path - 1);
    if (bind(s, (struct sockaddr *)&a, sizeof a) || listen(s, 1)) return 1;
    if ((c = accept(s, 0, 0)) < 0) return 1;
    while ((n = read(c, buf, sizeof buf)) > 0) write(c, buf, n);
    return 0;
}
"""

_PY_SERVERS = {
    "py-blocking": """
import socket, sys
l = socket.socket(socket.AF_UNIX); l.bind(sys.argv[1]); l.listen(1); c, _ = l.accept()
while (d := c.recv(65536)):
    c.sendall(d)
""",
    "uvloop-raw": """
import asyncio, sys, uvloop
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t = t
    def data_received(self, d): self.t.write(d)
async def main():
    await asyncio.get_running_loop().create_unix_server(Echo, sys.argv[1])
    await asyncio.Event().wait()
uvloop.run(main())
""",
    "uvloop-codec": """
import asyncio, sys, uvloop
sys.path.insert(0, sys.argv[2])
from toru_plugin_api.codec import Decoder, encode
class Echo(asyncio.Protocol):
    def connection_made(self, t): self.t, self.d = t, Decoder()
    def data_received(self, d):
        self.t.write(b"".join(encode({"id": m.get("id"), "ok": True, "result": m.get("result")})
                              for m in self.d.feed(d)))
async def main():
    await asyncio.get_running_loop().create_unix_server(Echo, sys.argv[1])
    await asyncio.Event().wait()
uvloop.run(main())
""",
}


def _build_c(tmp: Path) -> list[str] | None:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src, exe = tmp / "echo.c", tmp / "echo"
    src.write_text(_C_SOURCE)
    if subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True).returncode:
        return None
    return [str(exe)]


def _burn(us: float) -> None:
    end = time.perf_counter() + us / 1e6
    x = 0
    while time.perf_counter() < end:
        x += 1


def _measure(
    sock: socket.socket, pid: int, frame: bytes, n: int, gap_us: float
) -> dict[str, float]:
    size = len(frame)
    for _ in range(200):
        sock.sendall(frame)
        got = 0
        while got < size:
            got += len(sock.recv(65536))
    lat = []
    before = cpu_ticks(pid) or 0
    for _ in range(n):
        if gap_us:
            _burn(gap_us)
        t0 = time.perf_counter()
        sock.sendall(frame)
        got = 0
        while got < size:
            got += len(sock.recv(65536))
        lat.append(time.perf_counter() - t0)
    cpu_us = ((cpu_ticks(pid) or 0) - before) / TICKS / n * 1e6
    lat.sort()
    return {"p50_us": lat[n // 2] * 1e6, "p99_us": lat[int(n * 0.99)] * 1e6, "cpu_us": cpu_us}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=10000)
    ap.add_argument("--gap-us", type=float, nargs="*", default=[0.0, 250.0])
    args = ap.parse_args(argv)
    frame = encode({"id": 1, "ok": True, "result": {"status": 200, "body": "x" * 100}})
    with tempfile.TemporaryDirectory(prefix="micro-wakeup-", dir="/tmp") as tmp_name:
        tmp = Path(tmp_name)
        servers: dict[str, list[str]] = {}
        c = _build_c(tmp)
        if c:
            servers["c"] = c
        for name, code in _PY_SERVERS.items():
            servers[name] = [sys.executable, "-c", code]
        running = {}
        try:
            for i, (name, cmd) in enumerate(servers.items()):
                path = str(tmp / f"s{i}.sock")
                running[name] = unix_servers.start([*cmd, path, str(ROOT)], path)
            variants = [
                Variant(name, lambda p=proc, s=s, g=gap: _measure(s, p.pid, frame, args.requests, g), f"gap {gap:.0f} µs")
                for gap in args.gap_us
                for name, (proc, s) in running.items()
            ]  # fmt: skip
            results = alternate(variants, args.rounds)
        finally:
            unix_servers.stop(running.values())
    cols = [("p50_us", "round trip p50 µs", "{:.1f}"), ("p99_us", "p99 µs", "{:.1f}"),
            ("cpu_us", "server CPU µs/message", "{:.1f}")]  # fmt: skip
    print(table(results, cols, ratio="cpu_us"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
