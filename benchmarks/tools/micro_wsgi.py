"""The web tier's own cost per proxied request, without gunicorn, sockets to clients or wrk.

Calls the ASGI app of ``toru.wsgi`` in-process, on uvloop, with the scope of scenario (b)'s
request, against a fresh Toru (its supervisor and the benchmark plugin), and reports µs of
CPU per call:

- ``app+hop``: the production app with the worker's real control client: the supervisor and
  the plugin answer (their CPU is not counted; this process's is);
- ``app only``: the same app with a control client that answers at once (no hop): what the
  web tier's Python costs per request.

    python -m benchmarks.tools.micro_wsgi [--n 5000] [--rounds 3] [--profile]

The two variants are alternated (``ab.alternate``); medians of the rounds. ``--profile``
prints cProfile's top functions for ``app only``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from ..runner import SDK_ID, SDK_PATH, BenchmarkRun, preset
from .ab import Variant, alternate, table


def scope_for(path: str, token: str) -> dict[str, Any]:
    """An ASGI HTTP scope like gunicorn's asgi worker builds for ``GET path`` with a token."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"user-agent", b"wrk"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: dict[str, Any]) -> None:
    if message["type"] == "http.response.start" and message["status"] != 200:
        raise RuntimeError(f"unexpected {message['status']}")


async def time_calls(app: Any, path: str, token: str, n: int) -> dict[str, float]:
    """Wall and CPU µs per call, over ``n`` calls after 200 warm-up calls."""
    for _ in range(200):
        await app(scope_for(path, token), _receive, _send)
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        await app(scope_for(path, token), _receive, _send)
    return {
        "wall_us": (time.perf_counter() - t0) / n * 1e6,
        "cpu_us": (time.process_time() - c0) / n * 1e6,
    }


class _InstantControl:
    """A control client whose ``http`` answers at once with the plugin's reply."""

    def __init__(self, real: Any, reply: Any) -> None:
        self.real = real
        self.reply = reply

    async def http(self, *args: Any, **kwargs: Any) -> Any:
        return self.reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def measure(config: Any, token: str, n: int, rounds: int, profile: bool) -> None:
    """Alternate the two apps on one uvloop loop (one control connection); print the table."""
    import uvloop

    from toru.wsgi import create_app
    from toru.wsgi.control import ControlClient

    loop = uvloop.new_event_loop()
    run = loop.run_until_complete
    real = ControlClient(config.control_socket, http_timeout=config.http_timeout + 5)
    try:
        instant = _InstantControl(real, run(real.http("/" + SDK_ID, "GET", "/json", {}, b"")))
        apps = {
            "app+hop (through the supervisor)": create_app(config, control=real),
            "app only (control answers at once)": create_app(config, control=instant),
        }
        variants = [
            Variant(name, lambda app=app: run(time_calls(app, SDK_PATH, token, n)))
            for name, app in apps.items()
        ]
        cols = [("wall_us", "wall µs/request", "{:.1f}"),
                ("cpu_us", "CPU µs/request in this process", "{:.1f}")]  # fmt: skip
        print(table(alternate(variants, rounds), cols, ratio="cpu_us"))
        if profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            run(time_calls(apps["app only (control answers at once)"], SDK_PATH, token, n))
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    finally:
        real.close()
        loop.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.tools.micro_wsgi", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args(argv)
    run = BenchmarkRun(preset("quick"))
    try:
        plugins = run.build_plugins()
        toru = run.start_toru("h1", {SDK_ID: plugins[SDK_ID]})
        os.environ["TORU_HOME"] = str(toru.home)
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        from toru.wsgi import prepare_environment

        measure(prepare_environment(), toru.token, a.n, a.rounds, a.profile)
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
