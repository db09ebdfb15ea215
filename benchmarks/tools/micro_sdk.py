"""The SDK's own cost per request: the benchmark plugin on its socket, no host.

``python -m benchmarks.tools.micro_sdk [--rounds N] [--duration S] [--floor] [TREE ...]``

Each TREE is a checkout of this repository (default: this one); its SDK and its benchmark
plugin run as a process of their own, and the trees are measured in interleaved rounds
(``ab.alternate``; e.g. ``git worktree add /tmp/base HEAD~1`` and pass ``/tmp/base .``). ``--floor``
adds the least a Python plugin can do: a bare uvloop protocol that decodes each frame with
the codec and writes a canned reply. Reported per tree and concurrency (1 = sequential,
32 in flight): the plugin process's CPU µs per request (from ``/proc``), p50 and requests/s,
medians over the rounds.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.procstat import cpu_ticks
from benchmarks.socket_bench import (
    pipelined_run,
    plugin_frame,
    plugin_reply_id,
    plugin_reply_ok,
)
from benchmarks.tools import unix_servers
from benchmarks.tools.ab import Variant, alternate, table
from toru_plugin_api.codec import encode
from toru_plugin_api.messages import lifecycle_init

ROOT = Path(__file__).resolve().parents[2]
FLOOR = "floor"
TICKS = os.sysconf("SC_CLK_TCK")

# The least a Python plugin does per request: decode, look at two fields, write a reply.
_FLOOR_SOURCE = """
import asyncio, os, sys
sys.path.insert(0, sys.argv[1])
import uvloop
from toru_plugin_api.codec import Decoder, encode
BODY = '{"message":"hello","pad":"' + "x" * 72 + '"}'
class Floor(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.d = t, Decoder()
    def data_received(self, data):
        out = [
            encode({"type": "http", "request_id": m["request_id"], "payload": {
                "status": 200, "headers": {"Content-Type": "application/json"}, "body": BODY}})
            for m in self.d.feed(data) if m.get("type") == "http"
        ]
        if out:
            self.t.write(b"".join(out))
async def main():
    await asyncio.get_running_loop().create_unix_server(Floor, os.environ["TORU_PLUGIN_SOCKET"])
    await asyncio.Event().wait()
uvloop.run(main())
"""


def _start(tree: str, workdir: Path) -> tuple[subprocess.Popen, socket.socket]:
    sock_path = str(workdir / "p.sock")
    env = dict(os.environ, TORU_PLUGIN_SOCKET=sock_path, TORU_PLUGIN_ID="bench-sdk")
    env["TORU_INSTANCE_ID"] = "micro"
    env.pop("TORU_KV_FD", None)
    if tree == FLOOR:
        cmd = [sys.executable, "-c", _FLOOR_SOURCE, str(ROOT)]
    else:
        env["PYTHONPATH"] = tree
        cmd = [sys.executable, str(Path(tree) / "benchmarks/plugins/bench_sdk.py")]
    proc, s = unix_servers.start(cmd, sock_path, env)
    s.sendall(encode(lifecycle_init("micro", sock_path, os.devnull)))
    return proc, s


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="*", help="repository checkouts to compare (default: this)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=1.5, help="seconds per measurement")
    ap.add_argument("--floor", action="store_true", help="add the bare-uvloop floor plugin")
    args = ap.parse_args(argv)
    trees = [str(Path(t).resolve()) for t in args.trees] or [str(ROOT)]
    if args.floor:
        trees.append(FLOOR)
    running: list[tuple[subprocess.Popen, socket.socket]] = []

    def measure(i: int, depth: int) -> dict[str, float]:
        proc, s = running[i]
        before = cpu_ticks(proc.pid) or 0
        run = pipelined_run(
            s, plugin_frame("/json"), plugin_reply_id, plugin_reply_ok,
            inflight=depth, duration=args.duration,
        )  # fmt: skip
        ticks = (cpu_ticks(proc.pid) or 0) - before
        cpu_us = ticks / TICKS / max(run.requests, 1) * 1e6
        return {"cpu_us": cpu_us, "p50_us": run.percentile(50), "rps": run.rps}

    variants = [
        Variant(tree, lambda i=i, d=depth: measure(i, d), group=f"{depth} in flight")
        for depth in (1, 32)
        for i, tree in enumerate(trees)
    ]
    with tempfile.TemporaryDirectory(prefix="micro-sdk-", dir="/tmp") as tmp:
        try:
            for i, tree in enumerate(trees):
                workdir = Path(tmp) / str(i)
                workdir.mkdir()
                running.append(_start(tree, workdir))
            time.sleep(0.3)
            results = alternate(variants, args.rounds)
        finally:
            unix_servers.stop(running)
    cols = [("cpu_us", "plugin CPU µs/request", "{:.1f}"), ("p50_us", "p50 µs", "{:.0f}"),
            ("rps", "requests/s", "{:.0f}")]  # fmt: skip
    print(table(results, cols, ratio="cpu_us"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
