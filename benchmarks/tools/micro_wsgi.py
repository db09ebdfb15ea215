"""The web tier's own cost per proxied request, without gunicorn, sockets to clients or wrk.

Calls ``toru.wsgi`` in-process with a WSGI environ of scenario (b)'s request, against a
fresh Toru (its supervisor and the benchmark plugin), and reports µs of CPU per call:

- ``app+direct``: the production app as gunicorn builds it: the direct channel to the plugin;
- ``app+hop``: the real app, the real control client, supervisor and plugin (the path of
  one-connection plugins, or with the direct channel off);
- ``app only``: the same app with a control client that answers at once (no hop);
- ``channel``: ``DirectChannel.http`` alone, and a raw ``sendall`` + ``recv`` of the same
  frame on the same connection (the floor of a blocking round trip), this thread's CPU.

    python -m benchmarks.tools.micro_wsgi [--n 5000] [--rounds 3] [--profile]

The three app variants are alternated (``ab.alternate``); medians of the rounds.

``--profile`` prints cProfile's top functions for the ``app only`` case.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from typing import Any

from ..runner import SDK_ID, SDK_PATH, BenchmarkRun, preset
from .ab import Variant, alternate, table


def environ_for(path: str, token: str, host: str = "127.0.0.1:8080") -> dict[str, Any]:
    """A WSGI environ like gunicorn's for ``GET path`` with a bearer token."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "RAW_URI": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8080",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": host,
        "HTTP_USER_AGENT": "wrk",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def time_calls(app: Any, path: str, token: str, n: int) -> dict[str, float]:
    """Wall and CPU µs per call, over ``n`` calls after 200 warm-up calls."""

    def start_response(status: str, headers: list, exc_info: Any = None) -> None:
        if not status.startswith("200"):
            raise RuntimeError(f"unexpected {status}")

    for _ in range(200):
        b"".join(app(environ_for(path, token), start_response))
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        b"".join(app(environ_for(path, token), start_response))
    return {
        "wall_us": (time.perf_counter() - t0) / n * 1e6,
        "cpu_us": (time.process_time() - c0) / n * 1e6,
    }


class _InstantControl:
    """A control client whose ``http`` answers at once with the plugin's body."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.reply = real.http("/" + SDK_ID, "GET", "/json", {}, b"")

    def http(self, *args: Any, **kwargs: Any) -> Any:
        return self.reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def channel_floor(config: Any, n: int) -> None:
    """Print the direct channel's own cost per call against its raw socket round trip."""
    from toru.wsgi.app import _default_control, _default_direct
    from toru_plugin_api.codec import encode
    from toru_plugin_api.messages import HttpRequest, http_request_message

    direct = _default_direct(config, _default_control(config))
    assert direct is not None, "the direct channel is off (TORU_DIRECT_CHANNEL)"
    channel = direct()
    headers = {"Accept": "*/*", "Host": "127.0.0.1:8080", "User-Agent": "wrk"}
    call = lambda: channel.http("/" + SDK_ID, "GET", "/json", headers, b"")  # noqa: E731
    for _ in range(200):
        call()
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(n):
        call()
    wall, cpu = (time.perf_counter() - t0) / n * 1e6, (time.thread_time() - c0) / n * 1e6
    print(f"channel   : {wall:7.1f} us wall, {cpu:7.1f} us CPU per DirectChannel.http call")
    sock = channel._conns[SDK_ID].sock
    frame = encode(http_request_message("floor", HttpRequest("GET", "/json", headers, b"")))
    c0, t0 = time.thread_time(), time.perf_counter()
    for _ in range(n):
        sock.sendall(frame)
        sock.recv(65536)  # one small reply: one read
    wall, cpu = (time.perf_counter() - t0) / n * 1e6, (time.thread_time() - c0) / n * 1e6
    print(f"raw socket: {wall:7.1f} us wall, {cpu:7.1f} us CPU per sendall + recv (the floor)")


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
        from toru.supervisor.client import ControlClient
        from toru.wsgi import create_app, prepare_environment

        config = prepare_environment()
        channel_floor(config, a.n)
        real = ControlClient(str(config.control_socket))
        instant = _InstantControl(real)
        apps = {
            "app+direct (production)": create_app(config),
            "app+hop (through the supervisor)": create_app(config, control=lambda: real),
            "app only (control answers at once)": create_app(config, control=lambda: instant),
        }
        variants = [
            Variant(name, lambda app=app: time_calls(app, SDK_PATH, toru.token, a.n))
            for name, app in apps.items()
        ]
        cols = [("wall_us", "wall µs/request", "{:.1f}"),
                ("cpu_us", "CPU µs/request in this process", "{:.1f}")]  # fmt: skip
        print(table(alternate(variants, a.rounds), cols, ratio="cpu_us"))
        app2 = apps["app only (control answers at once)"]
        if a.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.enable()
            time_calls(app2, SDK_PATH, toru.token, a.n)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(30)
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
