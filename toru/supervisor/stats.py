"""Per-plugin latency and restart history for the UI (the control op ``stats``).

10-second buckets, the last 30 kept. PERF: ``record`` is on the hot path, so a bucket keeps
its count and at most ``SAMPLES`` latencies (the first ones of the bucket); percentiles are
computed only when a bucket closes or ``stats`` is asked for.
"""

from __future__ import annotations

import collections
import time
from typing import Any

BUCKET = 10
KEEP = 30
SAMPLES = 2048


def _pct(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    i = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[i]


class PluginStats:
    __slots__ = ("_count", "_latency", "_restarts", "_samples", "_t")

    def __init__(self) -> None:
        self._t = 0
        self._count = 0
        self._samples: list[float] = []
        self._latency: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEEP)
        self._restarts: collections.deque[dict[str, Any]] = collections.deque(maxlen=KEEP)

    def record(self, seconds: float) -> None:
        t = int(time.time()) // BUCKET * BUCKET
        if t != self._t:
            self._close()
            self._t = t
        self._count += 1
        if len(self._samples) < SAMPLES:
            self._samples.append(seconds)

    def _close(self) -> None:
        if self._count:
            s = sorted(self._samples)
            self._latency.append(
                {
                    "t": self._t,
                    "count": self._count,
                    "p50_ms": round(_pct(s, 0.5) * 1000, 3),
                    "p99_ms": round(_pct(s, 0.99) * 1000, 3),
                }
            )
        self._count = 0
        self._samples = []

    def record_restart(self) -> None:
        t = int(time.time()) // BUCKET * BUCKET
        if self._restarts and self._restarts[-1]["t"] == t:
            self._restarts[-1]["count"] += 1
        else:
            self._restarts.append({"t": t, "count": 1})

    def snapshot(self) -> dict[str, Any]:
        latency = list(self._latency)
        if self._count:
            s = sorted(self._samples)
            latency.append(
                {
                    "t": self._t,
                    "count": self._count,
                    "p50_ms": round(_pct(s, 0.5) * 1000, 3),
                    "p99_ms": round(_pct(s, 0.99) * 1000, 3),
                }
            )
        return {"latency": latency[-KEEP:], "restarts": list(self._restarts)}
