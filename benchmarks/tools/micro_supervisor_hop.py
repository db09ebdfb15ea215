"""Micro-benchmark of the supervisor hop: ControlClient.http -> supervisor -> SDK plugin -> back.

Measures, against a real ``toru supervisor`` and the ``hello-python`` example (SDK):
- sequential: one ControlClient, one request at a time (requests/s, p50/p99 µs);
- 32 in flight, threads: 32 threads with a ControlClient each (what gunicorn threads do);
- 32 in flight, pipelined: 4 raw connections x 8 outstanding from one thread (the
  supervisor's and plugin's capacity without the client's GIL in the way);
- the same sequential loop directly on the plugin's socket, so the hop's added latency
  is ``hop p50 - direct p50``; the supervisor's CPU time per request from /proc;
- the supervisor's RSS with 20 (stdlib test) plugins running.

Usage: ``.venv/bin/python -m benchmarks.tools.micro_supervisor_hop [--requests N] [--out FILE]``.

A/B: ``--ab OLD_TREE`` (e.g. a ``git worktree add /tmp/base HEAD``) starts two supervisors
side by side, one running OLD_TREE's code and one this tree's, each with the null plugin and
with hello-python, and alternates rounds between them (``--rounds``, ``ab.alternate``): the supervisor's CPU
per message (from /proc), p50/p99 and messages/s, sequential and 32 in flight (4 raw
connections x 8), medians over rounds. The client is the same raw-socket one for both; it
asks for the relayed ``http`` reply form as ``ControlClient`` does (an older supervisor
ignores that), and ``32 result`` measures the default form.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks.tools.ab import Result, Variant, alternate  # noqa: E402
from tests.supervisor.helpers import (  # noqa: E402
    SupervisorProc,
    enable_on_disk,
    kill_leftovers,
    make_plugin,
)
from toru.supervisor.client import ControlClient  # noqa: E402
from toru_plugin_api.codec import Decoder, encode  # noqa: E402

ENV = {
    "TORU_HEALTH_INTERVAL": "5",
    "TORU_HEALTH_TIMEOUT": "3",
    "TORU_RESCAN_INTERVAL": "5",
    "TORU_HTTP_TIMEOUT": "30",
}
PATH = "/echo"


def pct(sorted_us: list[float], p: float) -> float:
    if not sorted_us:
        return 0.0
    return sorted_us[min(len(sorted_us) - 1, int(p / 100 * len(sorted_us)))]


def summary(name: str, lat_ns: list[int], wall: float, cpu: float | None = None) -> dict[str, Any]:
    us = sorted(x / 1000 for x in lat_ns)
    out = {
        "scenario": name,
        "requests": len(us),
        "rps": round(len(us) / wall),
        "p50_us": round(pct(us, 50), 1),
        "p99_us": round(pct(us, 99), 1),
    }
    if cpu is not None:
        out["supervisor_cpu_us_per_request"] = round(cpu / len(us) * 1e6, 1)
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def sequential(client: ControlClient, route: str, n: int) -> tuple[list[int], float]:
    lat = []
    t0 = time.perf_counter()
    for _ in range(n):
        s = time.perf_counter_ns()
        r = client.http(route, "GET", PATH)
        lat.append(time.perf_counter_ns() - s)
        assert r.status == 200
    return lat, time.perf_counter() - t0


def threaded(sock: Path, route: str, n: int, threads: int) -> tuple[list[int], float]:
    per = n // threads
    lats: list[list[int]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(i: int) -> None:
        c = ControlClient(sock, http_timeout=30)
        c.call("ping")
        barrier.wait()
        out = lats[i]
        for _ in range(per):
            s = time.perf_counter_ns()
            c.http(route, "GET", PATH)
            out.append(time.perf_counter_ns() - s)
        c.close()

    ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return [x for xs in lats for x in xs], time.perf_counter() - t0


def pipelined(
    sock: Path, route: str, n: int, conns: int = 4, window: int = 8, reply: str | None = "message"
) -> tuple[list[int], float]:
    """``conns`` raw connections x ``window`` outstanding; ``reply="message"`` asks for the
    relayed reply form as ``ControlClient`` does (``None``: the default ``result`` form)."""
    socks = []
    for _ in range(conns):
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sock))
        socks.append(s)
    args = {"route": route, "method": "GET", "path": PATH, "headers": {}, "body": ""}
    extra = {"reply": reply} if reply else {}
    lat: list[int] = []
    sent_at: dict[int, int] = {}
    per = n // conns
    import selectors

    sel = selectors.DefaultSelector()
    state = {}
    seq = 0
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        state[s] = {"dec": Decoder(), "sent": 0, "done": 0}
    t0 = time.perf_counter()
    for s in socks:  # fill every window
        frames = []
        for _ in range(window):
            seq += 1
            sent_at[seq] = time.perf_counter_ns()
            frames.append(encode({"v": 1, "id": seq, "op": "http", "args": args, **extra}))
        s.sendall(b"".join(frames))
        state[s]["sent"] = window
    remaining = conns
    while remaining:
        for key, _ in sel.select():
            s = key.fileobj
            st = state[s]
            msgs = st["dec"].feed(s.recv(262144))
            now = time.perf_counter_ns()
            frames = []
            for m in msgs:
                lat.append(now - sent_at.pop(m["id"]))
                assert m["ok"], m
                st["done"] += 1
                if st["sent"] < per:
                    seq += 1
                    sent_at[seq] = time.perf_counter_ns()
                    frames.append(encode({"v": 1, "id": seq, "op": "http", "args": args, **extra}))
                    st["sent"] += 1
            if frames:
                s.sendall(b"".join(frames))
            if st["done"] >= per:
                sel.unregister(s)
                remaining -= 1
    wall = time.perf_counter() - t0
    for s in socks:
        s.close()
    return lat, wall


def direct(plugin_socket: Path, n: int) -> tuple[list[int], float] | None:
    """The same request straight to the plugin's socket (no supervisor), if it accepts."""
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(plugin_socket))
    except OSError:
        return None
    s.settimeout(10)
    dec = Decoder()
    lat = []
    t0 = time.perf_counter()
    try:
        for i in range(n):
            msg = {
                "type": "http",
                "timestamp": "2026-01-01T00:00:00.000Z",
                "request_id": f"d{i}",
                "payload": {"payload": {"method": "GET", "path": PATH, "headers": {}, "body": ""}},
            }
            st = time.perf_counter_ns()
            s.sendall(encode(msg))
            got: list[Any] = []
            while not got:
                got = dec.feed(s.recv(262144))
            lat.append(time.perf_counter_ns() - st)
    except (OSError, TimeoutError):
        return None
    finally:
        s.close()
    return lat, time.perf_counter() - t0


NULL_PLUGIN = r"""
import asyncio, json, os, re, struct, sys
if "--metadata" in sys.argv:
    print(json.dumps({"id": "null", "name": "Null", "version": "1", "icon": "", "route": "/null"}))
    sys.exit(0)
RID = re.compile(rb'"request_id":"([^"]*)"')
HEAD = struct.Struct(">I")
class P(asyncio.Protocol):
    def connection_made(self, t):
        self.t, self.buf = t, b""
    def data_received(self, data):
        buf = self.buf + data
        out, pos = [], 0
        while len(buf) - pos >= 4:
            (n,) = HEAD.unpack_from(buf, pos)
            if len(buf) - pos - 4 < n:
                break
            frame = buf[pos + 4 : pos + 4 + n]
            pos += 4 + n
            m = RID.search(frame)
            if m:
                body = (b'{"type":"http","request_id":"' + m.group(1)
                        + b'","payload":{"status":200,"headers":{},"body":"ok"}}')
                out.append(HEAD.pack(len(body)) + body)
        self.buf = buf[pos:]
        if out:
            self.t.write(b"".join(out))
async def main():
    path = os.environ["TORU_PLUGIN_SOCKET"]
    srv = await asyncio.get_running_loop().create_unix_server(P, path)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def _install_null(home: Path) -> None:
    """Install and enable the canned-answer plugin ``null`` in ``home``."""
    script = home / "null.py"
    script.write_text(NULL_PLUGIN)
    binary = home / "plugins" / "null.binary"
    binary.write_text(f'#!/bin/sh\nexec "{sys.executable}" -I "{script}" "$@"\n')
    binary.chmod(0o755)
    enable_on_disk(home, "null")


def measure_null(n: int) -> list[dict[str, Any]]:
    """The supervisor's own capacity: a plugin that answers with canned bytes."""
    home = Path(tempfile.mkdtemp(prefix="toru-bn-", dir="/tmp"))
    (home / "plugins").mkdir()
    _install_null(home)
    out = []
    sup = SupervisorProc(home, env=ENV)
    try:
        sup.start()
        sup.wait_state("null", "running")
        pid = sup.proc.pid
        client = ControlClient(sup.socket)
        sequential_path(client, "/null", 2000)
        c0 = cpu_seconds(pid)
        lat, wall = sequential_path(client, "/null", n)
        out.append(summary("null plugin: hop sequential", lat, wall, cpu_seconds(pid) - c0))
        c0 = cpu_seconds(pid)
        lat, wall = pipelined(sup.socket, "/null", n * 2)
        out.append(
            summary("null plugin: 32 in flight (pipelined)", lat, wall, cpu_seconds(pid) - c0)
        )
        client.close()
    finally:
        sup.stop()
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)
    return out


def sequential_path(client: ControlClient, route: str, n: int) -> tuple[list[int], float]:
    return sequential(client, route, n)


def build_hello(out: Path) -> Path:
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "build.py"), "--out", str(out)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return out / "hello-python.binary"


def measure_hop(n: int, hello: Path) -> list[dict[str, Any]]:
    home = Path(tempfile.mkdtemp(prefix="toru-bh-", dir="/tmp"))
    (home / "plugins").mkdir()
    shutil.copy(hello, home / "plugins" / "hello-python.binary")
    enable_on_disk(home, "hello-python")
    results = []
    sup = SupervisorProc(home, env=ENV)
    try:
        sup.start()
        sup.wait_state("hello-python", "running")
        client = ControlClient(sup.socket, http_timeout=30)
        sequential(client, "/hello", 2000)  # warm-up
        pid = sup.proc.pid
        c0 = cpu_seconds(pid)
        lat, wall = sequential(client, "/hello", n)
        results.append(summary("hop sequential", lat, wall, cpu_seconds(pid) - c0))
        c0 = cpu_seconds(pid)
        lat, wall = threaded(sup.socket, "/hello", n, 32)
        results.append(
            summary("hop 32 in flight (32 client threads)", lat, wall, cpu_seconds(pid) - c0)
        )
        c0 = cpu_seconds(pid)
        lat, wall = pipelined(sup.socket, "/hello", n)
        results.append(
            summary("hop 32 in flight (pipelined, 4 conns x 8)", lat, wall, cpu_seconds(pid) - c0)
        )
        d = direct(home / "run" / "p" / "hello-python.sock", n)
        if d is not None:
            results.append(summary("direct to plugin sequential (no supervisor)", *d))
        client.close()
    finally:
        sup.stop()
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)
    return results


def measure_rss(count: int = 20) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="toru-br-", dir="/tmp"))
    ids = [f"p{i:02d}" for i in range(count)]
    for pid in ids:
        make_plugin(home / "plugins", pid)
    enable_on_disk(home, *ids)
    sup = SupervisorProc(home, env=ENV)
    try:
        sup.start(timeout=60)
        for pid in ids:
            sup.wait_state(pid, "running", timeout=30)
        client = ControlClient(sup.socket)
        for pid in ids:  # every plugin connection used at least once
            client.http(f"/{pid}", "GET", "/echo")
        client.close()
        return {
            "scenario": f"supervisor RSS with {count} plugins",
            "rss_mib": round(rss_kib(sup.proc.pid) / 1024, 1),
        }
    finally:
        sup.stop(timeout=30)
        kill_leftovers(home)
        shutil.rmtree(home, ignore_errors=True)


def _ab_home(kind: str, hello: Path) -> tuple[Path, str]:
    home = Path(tempfile.mkdtemp(prefix="toru-ab-", dir="/tmp"))
    (home / "plugins").mkdir()
    if kind == "null":
        _install_null(home)
        return home, "null"
    shutil.copy(hello, home / "plugins" / "hello-python.binary")
    enable_on_disk(home, "hello-python")
    return home, "hello-python"


def _rows(results: list[Result], **keys: Any) -> list[dict[str, Any]]:
    """Medians of ``alternate``'s results as flat rows (``keys``: name -> row fields)."""
    return [{**keys[r.name], **{k: round(v, 2) for k, v in r.medians.items()}} for r in results]


def ab(old_root: Path, hello: Path, n: int, rounds: int) -> list[dict[str, Any]]:
    """Old and new supervisor side by side, alternated rounds, medians (see the docstring)."""
    sups: list[SupervisorProc] = []
    variants: list[Variant] = []
    keys: dict[str, dict[str, Any]] = {}

    def measure(sup: SupervisorProc, route: str, conns: int, window: int, count: int,
                reply: str | None) -> dict[str, float]:  # fmt: skip
        pid = sup.proc.pid  # type: ignore[union-attr]
        pipelined(sup.socket, route, 400, conns=1, window=1)  # warm
        c0 = cpu_seconds(pid)
        lat, wall = pipelined(sup.socket, route, count, conns=conns, window=window, reply=reply)
        cpu = cpu_seconds(pid) - c0
        us = sorted(x / 1000 for x in lat)
        return {"cpu_us": cpu / len(us) * 1e6, "p50_us": pct(us, 50), "p99_us": pct(us, 99),
                "rps": len(us) / wall}  # fmt: skip

    try:
        for kind in ("null", "hello"):
            for label, root in (("old", old_root), ("new", ROOT)):
                home, pid_ = _ab_home(kind, hello)
                sup = SupervisorProc(home, env=ENV, root=root)
                sups.append(sup)
                sup.start()
                sup.wait_state(pid_, "running")
                route = "/null" if kind == "null" else "/hello"
                for mode, conns, window, count, reply in (
                    ("seq", 1, 1, n, "message"),
                    ("32", 4, 8, n * 2, "message"),
                    ("32 result", 4, 8, n * 2, None),
                ):
                    name = f"{kind} {mode} {label}"
                    keys[name] = {"plugin": kind, "inflight": mode, "code": label}
                    variants.append(Variant(
                        name, lambda s=sup, a=(route, conns, window, count, reply): measure(s, *a),
                        group=f"{kind} {mode}",
                    ))  # fmt: skip
        return _rows(alternate(variants, rounds), **keys)
    finally:
        for sup in sups:
            sup.stop()
            kill_leftovers(sup.home)
            shutil.rmtree(sup.home, ignore_errors=True)


INPROCESS = r"""
import asyncio, re, sys, time, types
import uvloop
from toru.supervisor.connection import PluginConnection
from toru.supervisor.control_server import ControlServer, ControlConnection
from toru.supervisor.states import PluginState
from toru.supervisor.stats import PluginStats
from toru.supervisor.supervisor import Supervisor
from toru_plugin_api.codec import encode, encode_payload

N, BATCH = int(sys.argv[1]), int(sys.argv[2])
HEADERS = {"accept": "*/*", "user-agent": "wrk", "x-toru-user": "admin",
           "x-toru-role": "admin", "x-forwarded-for": "127.0.0.1", "x-request-id": "abc123"}
REPLY = (b'{"type":"http","timestamp":"2026-11-25T12:00:00.000Z","request_id":"%s",'
         b'"payload":{"status":200,"headers":{"content-type":"application/json"},'
         b'"body":"{\\"message\\":\\"hello\\",\\"n\\":1}"}}')
RID = re.compile(rb'"request_id":"([^"]+)"')

class Sink:
    def __init__(self): self.out = []
    def write(self, data): self.out.append(data)
    def is_closing(self): return False
    def close(self): pass
    def abort(self): pass
    def get_extra_info(self, *a, **k): return None

async def main():
    sup = Supervisor.__new__(Supervisor)
    sup.config = types.SimpleNamespace(max_frame=16 << 20)
    sup.http_timeout = 30.0
    conn = PluginConnection("p", 16 << 20)
    ptr = Sink(); conn.connection_made(ptr)
    plugin = types.SimpleNamespace(id="p", metadata=object(), state=PluginState.RUNNING,
        launched=types.SimpleNamespace(connection=conn), stopping=False, stats=PluginStats(),
        admission=lambda: conn)
    sup.plugins = {"p": plugin}; sup.routes = {"/p": plugin}
    server = ControlServer(sup, None)
    cc = ControlConnection(server); ctr = Sink(); cc.transport = ctr
    seq = 0
    def requests(k):
        nonlocal seq
        out = []
        for _ in range(k):
            seq += 1
            out.append(encode({"v": 1, "id": seq, "op": "http", "reply": "message", "args": {
                "route": "/p", "method": "GET", "path": "/json?x=1", "headers": HEADERS, "body": ""}}))
        return b"".join(out)
    spent = 0.0
    perf = time.thread_time  # CPU time: preemption by other processes is not counted
    slices, per_slice, in_slice = [], max(1, N // BATCH // 20), 0
    for i in range(N // BATCH + 200):
        req = requests(BATCH)
        t0 = perf(); cc.data_received(req); t1 = perf()
        sent = b"".join(ptr.out); ptr.out.clear()
        rids = RID.findall(sent)
        assert len(rids) == BATCH, sent[:200]
        rep = b"".join(encode_payload(REPLY % r) for r in rids)
        t2 = perf(); conn.data_received(rep); t3 = perf()
        assert len(ctr.out) == 1 and b'"ok":true' in ctr.out[0], ctr.out[:1]
        ctr.out.clear()
        if i >= 200:
            spent += (t1 - t0) + (t3 - t2)
            in_slice += 1
            if in_slice == per_slice:
                slices.append(spent / (per_slice * BATCH) * 1e6)
                spent, in_slice = 0.0, 0
    print(min(slices))  # the least disturbed slice: this box is shared

uvloop.run(main())
"""


def inprocess_ab(old_root: Path, n: int, rounds: int) -> list[dict[str, Any]]:
    """µs of supervisor Python work per relayed message, old vs new tree, medians of rounds."""

    def measure(root: Path, batch: int) -> dict[str, float]:
        out = subprocess.run(
            [sys.executable, "-c", INPROCESS, str(n), str(batch)],
            cwd=root, capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONPATH": str(root)},
        )  # fmt: skip
        return {"us_per_msg": float(out.stdout.split()[-1])}

    keys = {}
    variants = []
    for batch in (1, 8):
        for label, root in (("old", old_root), ("new", ROOT)):
            keys[f"{label} {batch}"] = {"code": label, "batch": batch}
            variants.append(
                Variant(f"{label} {batch}", lambda r=root, b=batch: measure(r, b), str(batch))
            )
    results = alternate(variants, rounds)
    rows = _rows(results, **keys)
    for row, res in zip(rows, results, strict=True):
        row["min"] = round(min(x["us_per_msg"] for x in res.samples), 2)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--plugins", type=Path, help="directory with hello-python.binary (else built)")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    ap.add_argument("--ab", type=Path, metavar="OLD_TREE", help="A/B against OLD_TREE's code")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of --ab")
    ap.add_argument("--inprocess", type=Path, metavar="OLD_TREE", help="in-process A/B")
    a = ap.parse_args()
    if a.inprocess:
        rows = inprocess_ab(a.inprocess.resolve(), a.requests, a.rounds)
        for r in rows:
            print(
                f"{r['code']:4} batch {r['batch']}: {r['us_per_msg']:6.2f} µs/msg (min {r['min']})"
            )
        if a.out:
            a.out.write_text(json.dumps(rows, indent=2) + "\n")
        return 0
    signal.signal(signal.SIGINT, signal.default_int_handler)
    tmp = None
    if a.plugins:
        hello = a.plugins / "hello-python.binary"
    else:
        tmp = Path(tempfile.mkdtemp(prefix="toru-bx-", dir="/tmp"))
        hello = build_hello(tmp)
    try:
        if a.ab:
            rows = ab(a.ab.resolve(), hello, a.requests, a.rounds)
            print(f"{'plugin':7} {'inflight':9} {'code':4} {'cpu µs/msg':>10} {'p50 µs':>8}"
                  f" {'p99 µs':>8} {'msg/s':>8}")  # fmt: skip
            for r in rows:
                print(f"{r['plugin']:7} {r['inflight']:9} {r['code']:4} {r['cpu_us']:10.1f}"
                      f" {r['p50_us']:8.1f} {r['p99_us']:8.1f} {r['rps']:8.0f}")  # fmt: skip
            if a.out:
                a.out.write_text(json.dumps(rows, indent=2) + "\n")
            return 0
        results = measure_hop(a.requests, hello)
        results.extend(measure_null(a.requests))
        results.append(measure_rss())
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    report = {"cpus": os.cpu_count(), "python": sys.version.split()[0], "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if a.out:
        a.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
