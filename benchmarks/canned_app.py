"""Scenario (h): Toru's real web app with every plugin answer canned in the worker.

Everything is the production app (auth, header rules, metrics, the same gunicorn config);
only the plugin round trip is replaced: the worker asks the plugin once per
``(route, method, path)`` through the supervisor and then answers every later request with
that same reply, with no socket at all. It measures what the web tier costs on its own. It
is a measurement tool, not a production path.

    TORU_HOME=H TORU_BIND=127.0.0.1:P gunicorn -c toru/wsgi/gunicorn_conf.py benchmarks.canned_app:application
"""

from __future__ import annotations

import threading
from typing import Any

from toru.wsgi import LazyApplication


class CannedControl:
    """A control client whose ``http`` answers from a per-thread cache after the first call."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self._canned: dict[tuple[str, str, str], Any] = {}

    def http(
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
            reply = self._canned[key] = self.real.http(route, method, path, headers, body)
        return reply

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


_local = threading.local()


def _build(config: Any) -> Any:
    from toru.supervisor.client import ControlClient
    from toru.wsgi import create_app

    def control() -> CannedControl:
        c = getattr(_local, "canned", None)
        if c is None:
            c = _local.canned = CannedControl(ControlClient.for_thread(str(config.control_socket)))
        return c

    return create_app(config, control=control)


application = LazyApplication(_build)
