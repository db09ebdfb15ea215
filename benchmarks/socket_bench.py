"""Socket-level scenarios, no HTTP: (d) a client on the plugin's own socket, (e) the
supervisor hop (control socket -> supervisor -> plugin -> back).

Both use one blocking connection that keeps ``inflight`` requests outstanding (1 is the
sequential case) and time every request from send to reply with ``perf_counter_ns``.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toru.errors import ToruError
from toru.supervisor.client import http_frame, reply_result
from toru_plugin_api.codec import Decoder, encode
from toru_plugin_api.messages import (
    HttpRequest,
    http_request_message,
    lifecycle_init,
    lifecycle_shutdown,
)


@dataclass(frozen=True)
class SocketRun:
    """One measured run: completed requests, wall seconds, sorted latencies in µs."""

    requests: int
    duration_s: float
    latencies_us: list[float]
    errors: int
    client_cpu_s: float | None = None  # the load generator's own CPU (this process)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile of the latencies (µs)."""
        lat = self.latencies_us
        if not lat:
            return 0.0
        k = min(len(lat) - 1, max(0, round(p / 100 * len(lat) + 0.5) - 1))
        return lat[k]


def pipelined_run(
    sock: socket.socket,
    make_frame: Callable[[int], bytes],
    reply_id: Callable[[dict[str, Any]], Any],
    reply_ok: Callable[[dict[str, Any]], bool],
    *,
    inflight: int,
    duration: float,
    warmup: int = 200,
    limit: int | None = None,
) -> SocketRun:
    """Keep ``inflight`` requests outstanding on ``sock`` for ``duration`` seconds.

    With ``limit``, stop sending after that many requests (whichever comes first).
    """
    sock.settimeout(30.0)  # a stalled peer fails the run instead of hanging it
    decoder = Decoder()
    sent: dict[Any, int] = {}
    lat: list[float] = []
    errors = 0
    next_id = 1
    perf = time.perf_counter_ns

    def fill(n: int) -> None:
        nonlocal next_id
        chunks = []
        now = perf()
        for _ in range(n):
            rid = next_id
            next_id += 1
            chunks.append(make_frame(rid))
            sent[rid] = now
        sock.sendall(b"".join(chunks))

    # Warm-up: not timed (first requests pay for imports, caches, connection set-up).
    for _ in range(warmup):
        fill(1)
        while sent:
            for msg in decoder.feed(sock.recv(1 << 20)):
                sent.pop(reply_id(msg), None)
    start = perf()
    cpu0 = time.process_time()
    stop_at = start + int(duration * 1e9)
    budget = limit if limit is not None else 1 << 62
    fill(min(inflight, budget))
    issued = min(inflight, budget)
    done = 0
    while True:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("peer closed the connection during the run")
        now = perf()
        msgs = decoder.feed(data)
        for msg in msgs:
            t0 = sent.pop(reply_id(msg), None)
            if t0 is None:
                continue
            lat.append((now - t0) / 1000)
            done += 1
            if not reply_ok(msg):
                errors += 1
        if now < stop_at and issued < budget:
            if len(sent) < inflight:
                n = min(inflight - len(sent), budget - issued)
                fill(n)
                issued += n
        elif not sent:
            break
    elapsed = (perf() - start) / 1e9
    cpu = time.process_time() - cpu0
    lat.sort()
    return SocketRun(done, elapsed, lat, errors, cpu)


# --------------------------------------------------------------------------- (d) plugin socket


class StandalonePlugin:
    """The benchmark plugin started by us (not by a supervisor), for the floor measurement.

    ``start()``/``stop()`` are idempotent; ``stop()`` sends ``shutdown``, then SIGTERM, then
    SIGKILL.
    """

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.binary = binary
        self.socket_path = str(workdir / "floor.sock")
        self.log_path = workdir / "floor-plugin.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> StandalonePlugin:
        if self.proc is not None:
            return self
        env = dict(os.environ)
        env.pop("TORU_KV_FD", None)
        env.update(
            {
                "TORU_PLUGIN_SOCKET": self.socket_path,
                "TORU_PLUGIN_ID": "bench-sdk",
                "TORU_INSTANCE_ID": "bench",
            }
        )
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.binary)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"benchmark plugin did not listen: {self.log_path.read_text()[-1000:]}"
                )
            time.sleep(0.02)
        return self

    def connect(self) -> socket.socket:
        """A new connection, already sent ``init``."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(self.socket_path)
        s.sendall(encode(lifecycle_init("bench", self.socket_path, str(self.log_path))))
        return s

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(OSError):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1)
                s.connect(self.socket_path)
                s.sendall(encode(lifecycle_shutdown()))
                s.close()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(3)
        self.proc = None


def plugin_frame(path: str = "/json") -> Callable[[int], bytes]:
    """Frames of ``http`` requests for the plugin protocol (request ids ``"r<n>"``)."""
    req = HttpRequest("GET", path, {"accept": "*/*"}, b"")

    def make(rid: int) -> bytes:
        return encode(http_request_message(f"r{rid}", req))

    return make


def plugin_reply_id(msg: dict[str, Any]) -> Any:
    rid = msg.get("request_id")
    return int(rid[1:]) if isinstance(rid, str) and rid[:1] == "r" else None


def plugin_reply_ok(msg: dict[str, Any]) -> bool:
    return (msg.get("payload") or {}).get("status") == 200


# --------------------------------------------------------------------------- (e) supervisor hop


def control_frame(route: str, path: str = "/json") -> Callable[[int], bytes]:
    """Frames of control-protocol ``http`` ops exactly as a gunicorn worker sends them
    (``toru.supervisor.client.http_frame``: the request's JSON and body in the binary tail,
    relayed unparsed; the plugin's reply relayed as is)."""

    def make(rid: int) -> bytes:
        return b"".join(http_frame(str(rid), route, "GET", path, {"accept": "*/*"}, b""))

    return make


def control_reply_id(msg: dict[str, Any]) -> Any:
    rid = msg.get("id")
    return int(rid) if isinstance(rid, str) and rid.isdigit() else rid


def control_reply_ok(msg: dict[str, Any]) -> bool:
    try:
        return (reply_result(msg) or {}).get("status") == 200
    except ToruError:
        return False


def connect_unix(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def worker_client_run(
    control_socket: str, route: str, duration: float, warmup: int = 200
) -> SocketRun:
    """Sequential requests through the web worker's own client (``toru.wsgi.control``'s
    ``ControlClient``, on uvloop as in an asgi worker)."""
    import uvloop

    from toru.wsgi.control import ControlClient

    async def main() -> SocketRun:
        client = ControlClient(control_socket)
        perf = time.perf_counter_ns
        errors = 0
        try:
            for _ in range(warmup):
                await client.http(route, "GET", "/json", {"accept": "*/*"}, b"")
            lat: list[float] = []
            start = now = perf()
            stop_at = start + int(duration * 1e9)
            while now < stop_at:
                t0 = perf()
                resp = await client.http(route, "GET", "/json", {"accept": "*/*"}, b"")
                now = perf()
                lat.append((now - t0) / 1000)
                if resp.status != 200:
                    errors += 1
        finally:
            with contextlib.suppress(Exception):
                client.close()
        lat.sort()
        return SocketRun(len(lat), (perf() - start) / 1e9, lat, errors)

    return uvloop.run(main())
