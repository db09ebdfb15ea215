"""Context switches and CPU per request in the web workers, with ``perf stat`` (software
events; this VM has no hardware counters), for both baselines, (h) and (b), alternated
(``ab.alternate``).

    python -m benchmarks.tools.switches [--rounds 2] [--seconds 5]

It shows what blocking mid-request does to a sync worker: in (a) and (h) a worker switches
~1.5 times per request (accept, then the next request); every plugin round trip adds a
block and a wake-up. ``perf`` attached to the workers makes each switch dearer, so the CPU
column runs higher than in ``python -m benchmarks``; compare the rows with each other.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import threading
import time
from typing import Any

from ..procstat import cmdline, descendants, role_of
from ..runner import SDK_ID, SDK_PATH, BenchmarkRun, preset
from ..stack import BaselineServer, CannedWeb
from ..wrk import run_wrk
from .ab import Variant, alternate, table


def perf_stat(pids: list[int], seconds: float) -> dict[str, float]:
    """``task-clock`` (ms), ``context-switches`` and ``cpu-migrations`` of ``pids``."""
    out = subprocess.run(
        ["perf", "stat", "-x", ",", "-e", "task-clock,context-switches,cpu-migrations",
         "-p", ",".join(map(str, pids)), "--", "sleep", str(seconds)],
        capture_output=True, text=True, check=False,
    ).stderr  # fmt: skip
    values: dict[str, float] = {}
    for line in out.splitlines():
        parts = line.split(",")
        if len(parts) > 3:
            try:
                values[parts[2]] = float(parts[0])
            except ValueError:
                continue
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.tools.switches", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=5.0)
    a = ap.parse_args(argv)
    if shutil.which("perf") is None:
        print("needs perf (Debian package linux-perf)", file=sys.stderr)
        return 2
    run = BenchmarkRun(preset("quick"))
    try:
        plugins = run.build_plugins()
        toru = run.start_toru("h1", {SDK_ID: plugins[SDK_ID]})
        base = run._start("baseline", BaselineServer(run.workdir / "baseline", run.workers))
        abase = run._start("asgi baseline", BaselineServer(run.workdir / "b2", run.workers, "asgi"))
        canned = run._start("canned", CannedWeb(toru.home, run.workers))
        servers = {
            "(a) sync baseline": (base.url, base.pid, None),
            "(a) asgi baseline": (abase.url, abase.pid, None),
            "(h) app alone": (canned.url, canned.pid, toru.token),
            "(b) through the supervisor": (toru.url, toru.pid, toru.token),
        }

        def measure(url: str, root: int, token: str | None) -> dict[str, float]:
            workers = [
                p for p in descendants(root)
                if role_of(p) == "web" and p != root and "master" not in cmdline(p)
            ]  # fmt: skip
            run_wrk(url + SDK_PATH, connections=16, duration=1, token=token)  # warm-up
            res: dict[str, Any] = {}

            def drive() -> None:
                res["w"] = run_wrk(
                    url + SDK_PATH, connections=16, duration=a.seconds + 1.5, token=token
                )

            load = threading.Thread(target=drive)
            load.start()
            time.sleep(0.5)
            v = perf_stat(workers, a.seconds)
            load.join()
            n = res["w"].rps * a.seconds
            return {"rps": res["w"].rps, "cpu_us": v.get("task-clock", 0) * 1000 / n,
                    "switches": v.get("context-switches", 0) / n,
                    "migrations": v.get("cpu-migrations", 0) / n}  # fmt: skip

        variants = [Variant(name, lambda x=x: measure(*x)) for name, x in servers.items()]
        cols = [("rps", "req/s", "{:.0f}"), ("cpu_us", "worker CPU µs/request", "{:.0f}"),
                ("switches", "worker context switches/request", "{:.2f}"),
                ("migrations", "migrations/request", "{:.2f}")]  # fmt: skip
        print(table(alternate(variants, a.rounds), cols, ratio="switches"))
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
