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

__all__ = ["application", "create_app", "prepare_environment"]


def prepare_environment() -> Any:
    """Load the config from the environment and point prometheus_client at its directory."""
    from ..config import load_config

    config = load_config()
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        config.metrics_dir.mkdir(parents=True, exist_ok=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(config.metrics_dir)
    return config


_app: Callable[..., Iterable[bytes]] | None = None
_lock = threading.Lock()


def _build() -> Callable[..., Iterable[bytes]]:
    global _app
    with _lock:
        if _app is None:
            config = prepare_environment()
            from .app import create_app

            _app = create_app(config)
    return _app


def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """WSGI entry point: the Falcon app, built on first use in this process."""
    app = _app or _build()
    return app(environ, start_response)


def create_app(*args: Any, **kwargs: Any) -> Any:
    """Re-export of ``toru.wsgi.app.create_app`` (imported lazily)."""
    from .app import create_app as _create

    return _create(*args, **kwargs)
