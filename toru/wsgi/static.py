"""The web UI from ``webapp/`` at ``/``: ETags, revalidation, SPA fallback to index.html.

Installed as Falcon's sink for ``/`` (routes win over sinks), so unknown ``/api/...`` paths
land here too and get a JSON 404. Files are cached in memory keyed by (mtime, size), so an
edited file is picked up without a restart. Behind nginx, nginx serves these files itself.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import sys
import threading
from pathlib import Path

import falcon
import falcon.asgi

from ..errors import NotFound

_TYPES = {
    ".js": "application/javascript; charset=utf-8",
    ".mjs": "application/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".woff2": "font/woff2",
}


def default_webapp_dir() -> Path:
    """``TORU_WEBAPP_DIR``, else ``webapp/`` of the repo checkout, else the installed copy.

    ``pip install .`` (not editable) puts the UI under ``<prefix>/share/toru/webapp``
    (setup.cfg's data_files), since ``webapp/`` is not a Python package.
    """
    env = os.environ.get("TORU_WEBAPP_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent.parent / "webapp"
    if (checkout / "index.html").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "toru" / "webapp"


class StaticFiles:
    """Sink serving ``root``; ``Cache-Control: no-cache`` plus ETag so upgrades show at once."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[Path, tuple[int, int, str, bytes]] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path) -> tuple[str, bytes] | None:
        try:
            st = path.stat()
        except OSError:
            return None
        if not path.is_file():
            return None
        hit = self._cache.get(path)
        if hit and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
            return hit[2], hit[3]
        try:
            data = path.read_bytes()
        except OSError:
            return None
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        with self._lock:
            self._cache[path] = (st.st_mtime_ns, st.st_size, etag, data)
        return etag, data

    def _resolve(self, url_path: str) -> Path | None:
        rel = url_path.lstrip("/")
        if not rel:
            return self.root / "index.html"
        try:
            candidate = (self.root / rel).resolve()
        except (OSError, ValueError):
            return None
        if candidate != self.root and self.root not in candidate.parents:
            return None
        if candidate.is_file():
            return candidate
        return None

    async def __call__(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, **kwargs: object
    ) -> None:
        path = req.path
        if path == "/api" or path.startswith(("/api/", "/metrics", "/healthz", "/livez")):
            raise NotFound(f"no endpoint {req.method} {path}", code="not_found")
        if req.method not in ("GET", "HEAD"):
            raise falcon.HTTPMethodNotAllowed(["GET", "HEAD"])
        if "\x00" in path:
            raise NotFound("no such file")
        target = self._resolve(path)
        if target is None:
            last = path.rstrip("/").rsplit("/", 1)[-1]
            if "." in last:  # a missing asset stays a 404; only app routes fall back
                raise NotFound(f"no file {path}")
            target = self.root / "index.html"
        loaded = self._load(target)
        if loaded is None:
            raise NotFound("the web UI is not installed (no webapp/index.html)", code="no_ui")
        etag, data = loaded
        resp.set_header("ETag", etag)
        resp.cache_control = ["no-cache"]
        inm = req.get_header("If-None-Match")
        if inm and etag in [t.strip() for t in inm.split(",")]:
            resp.status = 304
            return
        ctype = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
        resp.content_type = ctype or "application/octet-stream"
        resp.data = data
