"""Scenarios: one named measurement each, run several times and summarised by medians.

A scenario's ``measure(duration)`` does one bounded run and returns the raw numbers; the
runner wraps it with a CPU meter over the processes that serve it. Field names here are the
JSON's, so they are part of the stable output format (see README.md).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procstat import CpuMeter
from .socket_bench import SocketRun
from .wrk import WrkResult, run_wrk

Measure = Callable[[float], dict[str, Any]]
# Load that runs alongside a measurement (e.g. slow clients); yields a dict it fills with
# its own counters when it ends, which go into the run's fields.
Background = Callable[[], contextlib.AbstractContextManager[dict[str, Any]]]


@dataclass
class Scenario:
    """A measurement: how to run it once, which processes' CPU it costs, what it means."""

    id: str
    label: str
    kind: str  # "http" (wrk) or "socket" (our client on a Unix socket)
    connections: int  # wrk connections, or requests in flight for socket scenarios
    measure: Measure
    cpu_roots: Callable[[], list[int]] = list
    group: str = "core"
    params: dict[str, Any] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    def run_once(self, duration: float) -> dict[str, Any]:
        """One measured run, with CPU seconds of the serving processes when known."""
        roots = [p for p in self.cpu_roots() if p]
        meter = CpuMeter(roots) if roots else None
        if meter:
            meter.start()
        t0 = time.monotonic()
        out = self.measure(duration)
        out["wall_s"] = round(time.monotonic() - t0, 3)
        if meter:
            cpu = meter.stop()
            out["cpu_s"] = round(cpu, 3)
            n = out.get("requests") or 0
            out["cpu_us_per_request"] = round(cpu / n * 1e6, 1) if n else None
            out["cpu_us_per_request_by_role"] = (
                {r: round(c / n * 1e6, 1) for r, c in sorted(meter.by_role.items())} if n else None
            )
            out["sys_cpu_us_per_request_by_role"] = (
                {r: round(c / n * 1e6, 1) for r, c in sorted(meter.sys_by_role.items())}
                if n
                else None
            )
        else:
            out["cpu_s"] = None
            out["cpu_us_per_request"] = None
        self.runs.append(out)
        return out

    def summary(self) -> dict[str, Any]:
        """The JSON object for this scenario: every run plus median/min/max per metric."""
        out: dict[str, Any] = {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "group": self.group,
            "connections": self.connections,
            "params": self.params,
            "runs": self.runs,
            "error": self.error,
        }
        for key in ("rps", "p50_us", "p90_us", "p99_us", "max_us", "cpu_us_per_request"):
            out[key] = spread([r.get(key) for r in self.runs])
        cpu = out["cpu_us_per_request"]
        out["cpu_s_per_1k_requests"] = (
            {k: round(v / 1000, 4) for k, v in cpu.items()} if cpu else None
        )
        roles = sorted(
            {r for run in self.runs for r in (run.get("cpu_us_per_request_by_role") or {})}
        )
        for key in ("cpu_us_per_request_by_role", "sys_cpu_us_per_request_by_role"):
            out[key] = {
                r: (spread([(run.get(key) or {}).get(r) for run in self.runs]) or {}).get("median")
                for r in roles
            }
        client = spread([r.get("client_cpu_us_per_request") for r in self.runs])
        out["client_cpu_us_per_request"] = client["median"] if client else None
        out["errors"] = sum(int(r.get("errors") or 0) for r in self.runs)
        out["requests"] = sum(int(r.get("requests") or 0) for r in self.runs)
        return out


def spread(values: list[Any]) -> dict[str, float] | None:
    """``{"median", "min", "max", "n"}`` of the numbers among ``values`` (None if none)."""
    nums = [float(v) for v in values if isinstance(v, (int, float))]
    if not nums:
        return None
    return {
        "median": round(statistics.median(nums), 2),
        "min": round(min(nums), 2),
        "max": round(max(nums), 2),
        "n": len(nums),
    }


def from_wrk(r: WrkResult) -> dict[str, Any]:
    """A wrk result as run fields."""
    lat = r.latency_us
    return {
        "requests": r.requests,
        "duration_s": round(r.duration_s, 3),
        "rps": round(r.rps, 1),
        "p50_us": lat["p50"],
        "p90_us": lat["p90"],
        "p99_us": lat["p99"],
        "max_us": lat["max"],
        "errors": r.error_count,
        "error_detail": {k: v for k, v in r.errors.items() if v},
    }


def from_socket(r: SocketRun) -> dict[str, Any]:
    """A socket run as run fields (same names as wrk's)."""
    return {
        "requests": r.requests,
        "duration_s": round(r.duration_s, 3),
        "rps": round(r.rps, 1),
        "p50_us": round(r.percentile(50), 1),
        "p90_us": round(r.percentile(90), 1),
        "p99_us": round(r.percentile(99), 1),
        "max_us": round(r.latencies_us[-1], 1) if r.latencies_us else 0.0,
        "errors": r.errors,
        "client_cpu_us_per_request": (
            round(r.client_cpu_s / r.requests * 1e6, 1)
            if r.client_cpu_s is not None and r.requests
            else None
        ),
    }


def http_scenario(
    id: str,
    label: str,
    url: str,
    *,
    connections: int,
    cpu_roots: Callable[[], list[int]] = list,
    token: str | None = None,
    method: str = "GET",
    body: str | None = None,
    body_file: Path | None = None,
    group: str = "core",
    params: dict[str, Any] | None = None,
    during: Background | None = None,
) -> Scenario:
    """A wrk-driven scenario against ``url``, with ``during`` running alongside if given."""

    def measure(duration: float) -> dict[str, Any]:
        with during() if during else contextlib.nullcontext({}) as extra:
            out = from_wrk(
                run_wrk(
                    url,
                    connections=connections,
                    duration=duration,
                    token=token,
                    method=method,
                    body=body,
                    body_file=body_file,
                )
            )
        out.update(extra)
        return out

    p = {"url": url, "method": method}
    p.update(params or {})
    return Scenario(id, label, "http", connections, measure, cpu_roots, group, p)


def socket_scenario(
    id: str,
    label: str,
    run: Callable[[float], SocketRun],
    *,
    inflight: int,
    cpu_roots: Callable[[], list[int]] = list,
    group: str = "core",
    params: dict[str, Any] | None = None,
) -> Scenario:
    """A scenario driven by one of ``socket_bench``'s clients."""

    def measure(duration: float) -> dict[str, Any]:
        return from_socket(run(duration))

    return Scenario(id, label, "socket", inflight, measure, cpu_roots, group, dict(params or {}))
