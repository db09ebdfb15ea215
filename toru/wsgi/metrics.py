"""Worker-side metrics and the ``/metrics`` endpoint.

Import only after ``PROMETHEUS_MULTIPROC_DIR`` is set (``toru.wsgi`` does that from the
config): prometheus_client chooses its value backend at import time. Every gunicorn worker
writes its own files; ``/metrics`` merges all processes' files (workers and supervisor) with a
fresh ``MultiProcessCollector`` per scrape, as prometheus_client's multiprocess docs require.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import os
import time
from typing import Any

import falcon.asgi
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Latency buckets tuned for the proxy path: a local plugin answers in well under 1 ms to
# tens of ms; the upper buckets catch timeouts (30 s default).
_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

PROXY_DURATION = Histogram(
    "toru_proxy_request_duration_seconds",
    "Plugin route requests as measured in the worker, by plugin and status class",
    ["plugin", "code_class"],
    buckets=_BUCKETS,
)
PROXY_INFLIGHT = Gauge(
    "toru_proxy_inflight",
    "Plugin route requests in progress in live workers",
    ["plugin"],
    multiprocess_mode="livesum",
)
PROXY_ERRORS = Counter(
    "toru_proxy_errors",
    "Plugin route failures as seen by the worker (timeout, unavailable, bad_response, not_found)",
    ["plugin", "kind"],
)
HTTP_REQUESTS = Counter(
    "toru_http_requests",
    "HTTP requests handled by the API, by method, route template and status; requests "
    "forwarded to a plugin are counted in toru_proxy_request_duration_seconds instead",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "toru_http_request_duration_seconds",
    "HTTP request duration in the worker, by method and route template; requests forwarded "
    "to a plugin are in toru_proxy_request_duration_seconds instead",
    ["method", "route"],
    buckets=_BUCKETS,
)


@functools.lru_cache(maxsize=4096)
def _cells(metric: Any, labels: tuple[str, ...]) -> Any:
    """The value cells of ``metric.labels(*labels)``: a counter's or gauge's one value, a
    histogram's ``(sum, buckets, upper bounds)``; cached in this process.

    PERF: ``labels()`` validates, stringifies and takes a lock on every call (~3 µs). Label
    values are bounded (route templates, plugin ids, status classes), so the cache is too.
    NOTE: the cells are prometheus_client's own value objects (``_value``, ``_sum``,
    ``_buckets``: private names, stable through 0.x); tests/web/test_e2e_api.py
    (``test_metrics_count_every_request_once_whichever_worker_scrapes``) checks the counts
    in the exposition, so a release that renames them fails there.
    """
    c = metric.labels(*labels)
    if isinstance(metric, Histogram):
        return c._sum, c._buckets, c._upper_bounds
    return c._value


class PendingWrites:
    """Metric updates of this worker, written to its files once per event-loop tick.

    PERF: in multiprocess mode every update is an mmap write behind a lock and a pid check
    (~1.5-2.5 µs; a histogram observation is two, a forwarded request made four). Updates
    add up here, per value cell, and ``flush`` writes each cell once: at the end of the
    loop iteration that made them (``call_soon``), before this worker's ``/metrics``
    collects, and at the worker's shutdown. So a scrape sees every request that another
    worker finished before that worker's next loop iteration, which follows its answer at
    once. The inflight gauge's +1 and -1 of a request that never waited cancel out.
    """

    def __init__(self) -> None:
        self._amounts: dict[Any, float] = {}
        self._loop: Any = None  # the loop a flush is scheduled on, if any

    def add(self, cell: Any, amount: float) -> None:
        """Add ``amount`` to ``cell`` (written at the next flush)."""
        amounts = self._amounts
        amounts[cell] = amounts.get(cell, 0.0) + amount
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a CLI or a test): write now
            self.flush()
            return
        # NOTE: compared by identity: a flush scheduled on a loop that has stopped since
        # (a test client's) never runs, so the current loop gets one of its own.
        if self._loop is not loop:
            self._loop = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every pending amount (idempotent)."""
        self._loop = None
        amounts, self._amounts = self._amounts, {}
        for cell, amount in amounts.items():
            if amount:
                cell.inc(amount)


PENDING = PendingWrites()


def add(metric: Counter | Gauge, labels: tuple[str, ...], amount: float = 1.0) -> None:
    """``metric.labels(*labels).inc(amount)`` (a negative amount for a gauge), batched."""
    PENDING.add(_cells(metric, labels), amount)


def observe(metric: Histogram, labels: tuple[str, ...], value: float) -> None:
    """``metric.labels(*labels).observe(value)``, batched."""
    total, buckets, bounds = _cells(metric, labels)
    pending = PENDING
    pending.add(total, value)
    pending.add(buckets[bisect.bisect_left(bounds, value)], 1.0)


flush = PENDING.flush


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every request by its route template (bounded label values).

    Except a request forwarded to a plugin (it reached the plugin call): that one is
    counted and timed once, in ``toru_proxy_request_duration_seconds{plugin,code_class}``,
    which says more (which plugin). The updates are batched (``PendingWrites``).
    """

    async def process_request(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        req.context.t0 = time.perf_counter()

    async def process_response(
        self,
        req: falcon.asgi.Request,
        resp: falcon.asgi.Response,
        resource: object,
        req_succeeded: bool,
    ) -> None:
        context = req.context
        t0 = context.get("t0")
        if t0 is None or context.get("proxied"):
            return
        route = req.uri_template or ("static" if resource is None else "unknown")
        if not route.startswith(("/api", "/metrics", "/healthz", "/livez")):
            route = "static"
        method = req.method if req.method in _METHODS else "OTHER"
        status = resp.status if isinstance(resp.status, int) else int(str(resp.status)[:3])
        add(HTTP_REQUESTS, (method, route, str(status)))
        observe(HTTP_DURATION, (method, route), time.perf_counter() - t0)


def render(metrics_dir: str | None) -> tuple[bytes, str]:
    """The exposition text of every process (multiprocess mode) or of this one; ``flush()``
    this worker's pending updates first, on its loop (``PendingWrites`` is the loop's)."""
    path = metrics_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and os.path.isdir(path):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def mark_dead(pid: int, metrics_dir: str | None = None) -> None:
    """Drop a dead worker's live-gauge files (gunicorn ``child_exit`` hook)."""
    path = metrics_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, path)
