"""A misbehaving SDK plugin for the web tier's end-to-end tests (id ``web-test``, route ``/webtest``).

Named modes, one per path (go-plugin style):
- ``GET /slow?ms=N&id=X``: answers ``{"id": X}`` after N ms; concurrent requests therefore
  finish out of order, which shows every response is matched to its request by id;
- ``GET /hang``: never answers in time (the host's http_timeout gives 504);
- ``POST /crash``: the process exits at once (502 for this request, then 503 while the
  supervisor's backoff runs);
- ``GET /pid``: the plugin's pid;
- ``POST /reply`` with ``{"headers": {...}}``: answers 200 with exactly those headers (a
  plugin trying to set Toru's session cookie, or to be sniffed).

``install(plugins_dir)`` writes it as an executable ``web-test.binary`` that runs under the
test interpreter with the repo on ``sys.path``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def install(plugins_dir: Path) -> Path:
    """Write ``web-test.binary`` into ``plugins_dir``; returns its path."""
    plugins_dir.mkdir(parents=True, exist_ok=True)
    dst = plugins_dir / "web-test.binary"
    dst.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.web.webtest_plugin import main\n"
        "main()\n"
    )
    dst.chmod(0o755)
    return dst


def main() -> None:
    from toru_plugin_api import HttpRequest, HttpResponse, ToruPlugin, route, run

    class WebTestPlugin(ToruPlugin):
        metadata = {
            "id": "web-test",
            "name": "Web Test",
            "version": "1.0.0",
            "author": "Toru tests",
            "icon": "T",
            "route": "/webtest",
        }

        @route("GET", "/slow")
        async def slow(self, req: HttpRequest) -> dict:
            await asyncio.sleep(int(req.query.get("ms", "0")) / 1000)
            return {"id": req.query.get("id")}

        @route("GET", "/hang")
        async def hang(self, req: HttpRequest) -> dict:
            await asyncio.sleep(3600)
            return {}

        @route("POST", "/crash")
        async def crash(self, req: HttpRequest) -> dict:
            os._exit(3)

        @route("GET", "/pid")
        async def pid(self, req: HttpRequest) -> dict:
            return {"pid": os.getpid()}

        @route("POST", "/reply")
        async def reply(self, req: HttpRequest) -> HttpResponse:
            return HttpResponse(200, req.json()["headers"], "<p>plugin</p>")

    run(WebTestPlugin())


if __name__ == "__main__":
    main()
