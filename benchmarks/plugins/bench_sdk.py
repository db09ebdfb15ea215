"""The benchmark plugin, built on the SDK: answers the same bodies as the baseline Falcon app.

Its id comes from the executable's file name (``bench-sdk-07.binary`` is plugin
``bench-sdk-07`` on route ``/bench-sdk-07``), so the plugin-count scale test installs N
copies of one zipapp. Routes (below the plugin's route):

- ``GET /json``: the small JSON body (``body_of_size(SMALL)``);
- ``GET /size/{n}``: a JSON body of exactly ``n`` bytes;
- ``POST /echo``: the request body back.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SMALL = 100
MAX_SIZE = 8 * 1024 * 1024
DEFAULT_ID = "bench-sdk"
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$")


def body_of_size(size: int) -> bytes:
    """A JSON object of exactly ``size`` bytes (at least the fixed part, 32 bytes)."""
    head = b'{"message":"hello","pad":"'
    tail = b'"}'
    pad = max(0, size - len(head) - len(tail))
    return head + b"x" * pad + tail


def plugin_id_from_argv(argv0: str) -> str:
    """``.../bench-sdk-07.binary`` -> ``bench-sdk-07``; anything odd -> ``bench-sdk``."""
    name = Path(argv0).name
    if name.endswith(".binary"):
        name = name[: -len(".binary")]
    return name if _ID_RE.match(name) and name.startswith("bench") else DEFAULT_ID


def make_plugin(plugin_id: str):  # -> ToruPlugin (the SDK is imported lazily)
    """A plugin instance with ``plugin_id`` as id and ``/<plugin_id>`` as route."""
    from toru_plugin_api import HttpResponse, PluginError, ToruPlugin, route

    small = body_of_size(SMALL)
    json_headers = {"Content-Type": "application/json"}
    sized: dict[int, bytes] = {}

    class BenchPlugin(ToruPlugin):
        metadata = {
            "id": plugin_id,
            "name": f"Benchmark ({plugin_id})",
            "version": "1.0.0",
            "author": "Toru benchmarks",
            "icon": "⏱",
            "route": f"/{plugin_id}",
        }

        # PERF: plain ``def`` handlers (they never await), which the SDK calls inline without
        # a Task per request; a prebuilt HttpResponse, so the handler costs what the SDK costs.
        @route("GET", "/json")
        def json(self, req):
            return HttpResponse(200, json_headers, small)

        @route("GET", "/size/{n}")
        def size(self, req):
            try:
                n = int(req.params["n"])
            except ValueError:
                raise PluginError("size must be an integer", 400, "bad_request") from None
            if not 0 <= n <= MAX_SIZE:
                raise PluginError("size out of range", 400, "bad_request")
            body = sized.get(n)
            if body is None:
                body = sized[n] = body_of_size(n)
            return HttpResponse(200, json_headers, body)

        @route("POST", "/echo")
        def echo(self, req):
            return HttpResponse(200, json_headers, req.body)

    return BenchPlugin()


def main() -> None:
    """The plugin executable's entry point."""
    from toru_plugin_api import run

    run(make_plugin(plugin_id_from_argv(sys.argv[0])))


if __name__ == "__main__":
    main()
