"""Micro-benchmarks of the plugin protocol: codec throughput and SDK round-trip latency.

    python -m benchmarks.tools.micro_codec [--frames N] [--requests N] [--no-ujson] [--json]

1. frames/s through the codec: ``encode`` + ``Decoder.feed`` of one ~200-byte message.
2. SDK round trip: an SDK plugin in its own process; a raw blocking socket client sends one
   ``http`` request at a time and waits for its reply (p50/p99 in microseconds), for a routed
   handler and for the health probe the SDK answers inline.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PLUGIN = """
import sys
sys.path.insert(0, {root!r})
from toru_plugin_api import ToruPlugin, route, run

class Bench(ToruPlugin):
    metadata = {{"id": "bench", "name": "Bench", "version": "1", "route": "/bench"}}

    @route("GET", "/ping")
    async def ping(self, req):
        return {{"pong": True}}

run(Bench())
"""


def message_200() -> dict:
    """An http request message of about 200 bytes on the wire, like a small proxied GET."""
    from toru_plugin_api.messages import HttpRequest, http_request_message

    req = HttpRequest(
        "GET", "/items/42?sort=asc", {"Accept": "application/json", "X-Request-Id": "abc123"}
    )
    msg = http_request_message("r-000001", req)
    size = len(json.dumps(msg, separators=(",", ":")))
    msg["payload"]["payload"]["headers"]["X-Pad"] = "x" * max(0, 200 - size - 12)
    return msg


def bench_codec(n: int) -> dict:
    from toru_plugin_api import codec

    msg = message_200()
    frame = codec.encode(msg)
    dec = codec.Decoder()
    encode, feed = codec.encode, dec.feed
    for _ in range(1000):  # warm-up
        feed(encode(msg))
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n):
        feed(encode(msg))
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    # Coalesced: 64 frames per feed, as a pipelined reader sees them.
    batch = frame * 64
    t0 = time.perf_counter()
    for _ in range(n // 64):
        feed(batch)
    dt_batch = time.perf_counter() - t0
    return {
        "json": "ujson" if codec._ujson is not None else "json (stdlib)",
        "frame_bytes": len(frame),
        "encode_decode_frames_per_s": round(n / dt),
        "encode_decode_frames_per_cpu_s": round(n / cpu),
        "decode_only_coalesced_frames_per_s": round((n // 64) * 64 / dt_batch),
    }


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (clock ticks)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentile(sorted_vals: list[float], p: float) -> float:
    return sorted_vals[min(len(sorted_vals) - 1, int(p / 100 * len(sorted_vals)))]


def bench_round_trip(n: int) -> dict:
    from toru_plugin_api.codec import FrameReader, encode
    from toru_plugin_api.messages import (
        HttpRequest,
        http_request_message,
        lifecycle_init,
        lifecycle_shutdown,
    )
    from toru_plugin_api.testing import connect_unix

    workdir = tempfile.mkdtemp(prefix="toru-bench-", dir="/tmp")
    path = os.path.join(workdir, "p.sock")
    env = dict(os.environ, TORU_PLUGIN_SOCKET=path, TORU_LOG_LEVEL="warn")
    env.pop("TORU_KV_FD", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", PLUGIN.format(root=str(ROOT))], env=env, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(path):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("benchmark plugin did not start")
            time.sleep(0.01)
        sock = connect_unix(path)
        reader = FrameReader(sock)
        sock.sendall(encode(lifecycle_init("bench", path, "/dev/null")))
        results = {}
        for name, req in (
            ("routed_handler", HttpRequest("GET", "/ping")),
            ("health_probe", HttpRequest("GET", "/health", {"X-Toru-Probe": "1"})),
        ):
            frames = [encode(http_request_message(f"r{i}", req)) for i in range(n + 200)]
            samples = []
            cpu0 = 0.0
            for i, frame in enumerate(frames):
                if i == 200:
                    cpu0 = _cpu_seconds(proc.pid)
                t0 = time.perf_counter()
                sock.sendall(frame)
                reply = reader.read()
                dt = time.perf_counter() - t0
                assert reply is not None and reply["request_id"] == f"r{i}"
                if i >= 200:  # warm-up
                    samples.append(dt * 1e6)
            cpu = _cpu_seconds(proc.pid) - cpu0
            samples.sort()
            results[name] = {
                "plugin_cpu_us_per_request": round(cpu / len(samples) * 1e6, 1),
                "requests": n,
                "p50_us": round(_percentile(samples, 50), 1),
                "p99_us": round(_percentile(samples, 99), 1),
                "mean_us": round(sum(samples) / len(samples), 1),
                "requests_per_s": round(1e6 * len(samples) / sum(samples)),
            }
        sock.sendall(encode(lifecycle_shutdown()))
        proc.wait(5)
        sock.close()
        return results
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for f in Path(workdir).iterdir():
            f.unlink()
        os.rmdir(workdir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--no-ujson", action="store_true", help="measure the stdlib json fallback")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--skip-round-trip", action="store_true", help="codec only")
    args = parser.parse_args(argv)
    if args.no_ujson:
        sys.modules["ujson"] = None  # type: ignore[assignment]
    sys.path.insert(0, str(ROOT))
    out = {
        "python": sys.version.split()[0],
        "codec": bench_codec(args.frames),
        "sdk_round_trip": {} if args.skip_round_trip else bench_round_trip(args.requests),
    }
    try:
        import uvloop  # noqa: F401

        out["sdk_loop"] = "uvloop"
    except ImportError:
        out["sdk_loop"] = "asyncio"
    if args.json:
        print(json.dumps(out))
        return 0
    c = out["codec"]
    print(f"codec ({c['json']}, {c['frame_bytes']}-byte frame):")
    print(f"  encode+decode        {c['encode_decode_frames_per_s']:>10,} frames/s (wall)")
    print(f"  encode+decode        {c['encode_decode_frames_per_cpu_s']:>10,} frames/CPU-s")
    print(f"  decode, 64 coalesced {c['decode_only_coalesced_frames_per_s']:>10,} frames/s")
    if out["sdk_round_trip"]:
        print(f"SDK round trip ({out['sdk_loop']}, sequential, raw socket client):")
    for name, r in out["sdk_round_trip"].items():
        print(
            f"  {name:<15} p50 {r['p50_us']:>7.1f} us   p99 {r['p99_us']:>7.1f} us   "
            f"{r['requests_per_s']:>7,} req/s   plugin CPU {r['plugin_cpu_us_per_request']:>5.1f} us/req"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
