"""Run ``wrk`` (the Debian package) with our Lua script and parse its JSON line.

The Lua ``done()`` hook prints every number we need as one ``BENCH_JSON {...}`` line, so
nothing here depends on wrk's human-readable output format.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LUA_SCRIPT = Path(__file__).resolve().parent / "lua" / "bench.lua"
_MARK = "BENCH_JSON "


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed no result line."""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: totals and latency percentiles in microseconds."""

    requests: int
    duration_s: float
    errors: dict[str, int]
    latency_us: dict[str, float]

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def error_count(self) -> int:
        """Socket errors plus non-2xx/3xx answers."""
        return sum(self.errors.values())


def parse_output(stdout: str) -> WrkResult:
    """Extract the ``BENCH_JSON`` line of a wrk run."""
    for line in stdout.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=data["duration_us"] / 1e6,
                errors={k: int(v) for k, v in data["errors"].items()},
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
            )
    raise WrkError(f"wrk printed no result line:\n{stdout[-2000:]}")


def wrk_path() -> str:
    """The wrk executable; a clear error when it is not installed."""
    path = shutil.which("wrk")
    if not path:
        raise WrkError("wrk is not installed (Debian: apt-get install wrk)")
    return path


def run_wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    threads: int = 1,
    token: str | None = None,
    method: str = "GET",
    body: str | None = None,
    body_file: Path | None = None,
    timeout: float = 10.0,
) -> WrkResult:
    """One bounded wrk run against ``url``.

    PERF: one wrk thread by default: on the 2-core machines this is tuned for, a second
    load-generator thread steals a core from the server it measures.
    """
    threads = max(1, min(threads, connections))
    env = dict(os.environ)
    env["BENCH_TOKEN"] = token or ""
    env["BENCH_METHOD"] = method
    env["BENCH_BODY"] = body or ""
    env["BENCH_BODY_FILE"] = str(body_file) if body_file else ""
    cmd = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        f"--timeout={max(1, round(timeout))}s",
        "-s",
        str(LUA_SCRIPT),
        url,
    ]
    cp = subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=duration + timeout + 30
    )
    if cp.returncode != 0:
        raise WrkError(f"wrk exited {cp.returncode}: {cp.stderr.strip() or cp.stdout[-500:]}")
    return parse_output(cp.stdout)
