"""The web tier: Falcon's ASGI app, served by gunicorn's native ``asgi`` worker on uvloop.

The package is called ``wsgi`` for the project's layout (docs/ARCHITECTURE.md); what it
serves is ASGI. ``gunicorn -c deploy/gunicorn.conf.py toru.wsgi:application`` runs it.

``application`` builds the real app on its first call in each worker (the ASGI lifespan
startup, before any request), from the environment (``TORU_HOME`` and the other ``TORU_*``
settings), after gunicorn has forked, so no database connection, thread or control socket is
shared across processes. Importing this package sets ``PROMETHEUS_MULTIPROC_DIR`` to the
config's metrics directory when unset, before prometheus_client is imported anywhere in the
worker.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["application", "create_app", "LazyApplication", "prepare_environment"]


def prepare_environment() -> Any:
    """Load the config from the environment and point prometheus_client at its directory."""
    from ..config import load_config

    config = load_config()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        config.metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(config.metrics_dir)
    return config


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class LazyApplication:
    """An ASGI entry point that builds its app with ``factory(config)`` on its first call in
    each process, i.e. after gunicorn's fork (see the module docstring)."""

    def __init__(self, factory: Callable[[Any], ASGIApp]) -> None:
        self._factory = factory
        self._app: ASGIApp | None = None

    def build(self) -> ASGIApp:
        """The app, built now if it was not (idempotent)."""
        if self._app is None:
            from toru_plugin_api.heap import freeze_startup_heap

            self._app = self._factory(prepare_environment())
            freeze_startup_heap()  # PERF: the p99 (toru_plugin_api/heap.py)
        return self._app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        await (self._app or self.build())(scope, receive, send)


def _default_app(config: Any) -> ASGIApp:
    from .app import create_app

    return create_app(config)


application = LazyApplication(_default_app)


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Re-export of ``toru.wsgi.app.create_app`` (imported lazily)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
