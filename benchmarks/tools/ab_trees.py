"""A/B of two source trees on the body scenarios: one Toru stack per tree, wrk alternating.

    python -m benchmarks.tools.ab_trees --base /tmp/base [--base /tmp/other ...] [--rounds 3]
        [--duration 3] [--paths 1m,1mpost,json] [--connections 16]

``--base`` is another checkout (``git archive HEAD | tar -x -C /tmp/base``), A; more
``--base`` trees are B, C, ... and this tree comes last. Each tree serves its
own stack, started by that tree's ``benchmarks.runner`` in a helper process (cwd and
``PYTHONPATH`` = the tree, so the supervisor, the workers and the zipapp'd SDK plugin all
run that tree's code); an asgi direct baseline runs beside them for the ratios. Rounds
alternate (``ab.alternate``); the table gives, per variant and path, the medians of req/s
and of the CPU µs per request of each process role (from /proc, ``procstat.CpuMeter``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..procstat import CpuMeter
from ..stack import ROOT
from ..wrk import run_wrk
from .ab import Variant, alternate, table

# Run inside each tree: start the asgi baseline and Toru with the SDK plugin, say where.
_SERVE = """
import json, sys
from benchmarks.runner import SDK_ID, BenchmarkRun, preset
from benchmarks.stack import BaselineServer
run = BenchmarkRun(preset("quick"))
try:
    plugins = run.build_plugins()
    asgi = run._start("asgi baseline", BaselineServer(run.workdir / "baseline", run.workers, "asgi"))
    toru = run.start_toru("h1", {SDK_ID: plugins[SDK_ID]})
    print(json.dumps({"url": toru.url, "token": toru.token, "pid": toru.pid,
                      "asgi_url": asgi.url, "asgi_pid": asgi.pid,
                      "body_file": str(run._mib_body())}), flush=True)
    sys.stdin.read()
finally:
    run.close()
"""

PATHS = {
    "1m": ("GET", "/api/plugins/route/bench-sdk/size/1048576"),
    "5m": ("GET", "/api/plugins/route/bench-sdk/size/5242880"),  # more than one send buffer
    "1mpost": ("POST", "/api/plugins/route/bench-sdk/echo"),
    "json": ("GET", "/api/plugins/route/bench-sdk/json"),
}


def serve(tree: Path) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    """A helper process serving ``tree``'s stack, and where it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVE],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the stack of {tree} did not start")
    return proc, json.loads(line)


def measure(
    where: dict[str, Any], key: str, duration: float, direct: bool, connections: int = 16
) -> dict[str, float]:
    """One wrk run on ``key``'s path: req/s and CPU µs per request by role."""
    method, path = PATHS[key]
    url = (where["asgi_url"] if direct else where["url"]) + path
    body = Path(where["body_file"]) if method == "POST" else None
    meter = CpuMeter([where["asgi_pid"] if direct else where["pid"]])
    meter.start()
    r = run_wrk(
        url,
        connections=connections,
        duration=duration,
        token=None if direct else where["token"],
        method=method,
        body_file=body,
    )
    total = meter.stop()
    n = max(r.requests, 1)
    out = {
        "rps": r.rps,
        "p50": r.latency_us["p50"] / 1000,
        "p99": r.latency_us["p99"] / 1000,
        "cpu": total / n * 1e6,
        "errors": float(r.error_count),
    }
    for role, cpu in meter.by_role.items():
        out[f"cpu_{role}"] = cpu / n * 1e6
        out[f"sys_{role}"] = meter.sys_by_role.get(role, 0.0) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.tools.ab_trees", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--base", type=Path, action="append", required=True, help="another tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=3.0)
    ap.add_argument("--paths", default="1m,1mpost")
    ap.add_argument("--connections", type=int, default=16, help="wrk's connections")
    a = ap.parse_args(argv)
    keys = [k for k in a.paths.split(",") if k]
    helpers = []
    try:
        stacks = []
        for tree in [*(b.resolve() for b in a.base), ROOT]:
            proc, where = serve(tree)
            helpers.append(proc)
            stacks.append((f"{chr(65 + len(stacks))} ({tree.name})", where))
        variants = []
        direct = stacks[-1][1]
        for key in keys:
            variants.append(
                Variant(
                    "asgi direct",
                    lambda k=key: measure(direct, k, a.duration, True, a.connections),
                    key,
                )
            )
            variants += [
                Variant(
                    name,
                    lambda k=key, w=where: measure(w, k, a.duration, False, a.connections),
                    key,
                )
                for name, where in stacks
            ]
        results = alternate(variants, a.rounds)
    finally:
        for p in helpers:
            if p.stdin is not None:
                p.stdin.close()
            p.wait(timeout=60)
    roles = sorted({k[4:] for r in results for s in r.samples for k in s if k.startswith("cpu_")})
    columns = [
        ("rps", "req/s", "{:.0f}"),
        ("p50", "p50 ms", "{:.2f}"),
        ("p99", "p99 ms", "{:.2f}"),
        ("cpu", "CPU µs/req", "{:.0f}"),
    ]
    for role in roles:
        if any(r.medians.get(f"cpu_{role}") for r in results):
            columns += [(f"cpu_{role}", f"{role} µs", "{:.0f}"), (f"sys_{role}", "sys", "{:.0f}")]
    columns.append(("errors", "errors", "{:.0f}"))
    print(f"`python -m benchmarks.tools.ab_trees {' '.join(argv or sys.argv[1:])}`\n")
    print(table(results, columns, ratio="rps"))
    for res in results:  # every round, for a second look at the spread
        print(
            f"{res.name} ({res.group}): "
            + ", ".join(f"{s['rps']:.0f}/{s['cpu']:.0f}" for s in res.samples)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
