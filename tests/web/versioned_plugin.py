"""An SDK plugin that says which version and process answered (the upgrade tests).

``install(plugins_dir, plugin_id, version)`` writes ``<id>.binary`` the way ``toru plugins
install`` does: a temporary file in the plugin directory renamed over the old one (atomic,
so a running supervisor never sees half a file). Paths: ``GET /version`` ->
``{"version", "pid"}``; ``GET /slow?ms=N`` the same after N ms.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def install(plugins_dir: Path, plugin_id: str, version: str) -> Path:
    """Write (or atomically replace) ``<plugin_id>.binary``; returns its path."""
    script = (
        f"#!{sys.executable}\n"
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.web.versioned_plugin import main\n"
        f"main({plugin_id!r}, {version!r})\n"
    )
    return install_atomically(plugins_dir / f"{plugin_id}.binary", script)


def install_atomically(dst: Path, text: str) -> Path:
    """``text`` as the executable ``dst``, renamed over whatever was there."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, dst)
    return dst


def main(plugin_id: str, version: str) -> None:
    from toru_plugin_api import HttpRequest, ToruPlugin, route, run

    class VersionedPlugin(ToruPlugin):
        metadata = {
            "id": plugin_id,
            "name": "Versioned",
            "version": version,
            "icon": "V",
            "route": f"/{plugin_id}",
        }

        @route("GET", "/version")
        async def which(self, req: HttpRequest) -> dict:
            return {"version": version, "pid": os.getpid()}

        @route("GET", "/slow")
        async def slow(self, req: HttpRequest) -> dict:
            await asyncio.sleep(int(req.query.get("ms", "0")) / 1000)
            return {"version": version, "pid": os.getpid()}

    run(VersionedPlugin())
