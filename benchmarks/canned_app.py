"""Scenario (h): Toru's real web app with every plugin answer canned in the worker.

Everything is the production app (auth, header rules, metrics, the same gunicorn config);
only the plugin round trip is replaced: the worker asks the plugin once per
``(route, method, path)`` through the supervisor and then answers every later request with
that same reply, with no socket at all. It measures what the web tier costs on its own. It
is a measurement tool, not a production path.

    TORU_HOME=H TORU_BIND=127.0.0.1:P gunicorn -c toru/wsgi/gunicorn_conf.py benchmarks.canned_app:application
"""

from __future__ import annotations

from typing import Any

from toru.wsgi import LazyApplication


class CannedControl:
    """The worker's control client, with ``http`` answered from a cache after the first call
    of each ``(route, method, path)``; everything else goes to the real client."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self._canned: dict[tuple[str, str, str], Any] = {}

    async def http(
        self,
        route: str,
        method: str,
        path: str,
        headers: dict | None = None,
        body: Any = b"",
        timeout: float | None = None,
    ) -> Any:
        key = (route, method, path)
        reply = self._canned.get(key)
        if reply is None:
            reply = self._canned[key] = await self.real.http(route, method, path, headers, body)
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def _build(config: Any) -> Any:
    from toru.wsgi import create_app
    from toru.wsgi.control import ControlClient

    real = ControlClient(
        config.control_socket, http_timeout=config.http_timeout + 5, max_frame=config.max_frame
    )
    return create_app(config, control=CannedControl(real))


application = LazyApplication(_build)
