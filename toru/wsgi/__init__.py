"""The web tier. ``gunicorn toru.wsgi:application`` serves the Falcon app.

``application`` builds the real app on its first request in each worker, from the
environment (``TORU_HOME`` and the other ``TORU_*`` settings), after gunicorn has forked, so
no database connection or control socket is shared across processes. Importing this package
sets ``PROMETHEUS_MULTIPROC_DIR`` to the config's metrics directory when unset, before
prometheus_client is imported anywhere in the worker.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
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


WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class LazyApplication:
    """A WSGI entry point that builds its app with ``factory(config)`` on first use in each
    process, i.e. after gunicorn's fork (see the module docstring)."""

    def __init__(self, factory: Callable[[Any], WSGIApp]) -> None:
        self._factory = factory
        self._app: WSGIApp | None = None
        self._lock = threading.Lock()

    def build(self) -> WSGIApp:
        """The app, built now if it was not (gunicorn's ``post_fork`` calls this)."""
        with self._lock:
            if self._app is None:
                self._app = self._factory(prepare_environment())
        return self._app

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        return (self._app or self.build())(environ, start_response)


def _default_app(config: Any) -> WSGIApp:
    from .app import create_app

    return create_app(config)


application = LazyApplication(_default_app)


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Re-export of ``toru.wsgi.app.create_app`` (imported lazily)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
