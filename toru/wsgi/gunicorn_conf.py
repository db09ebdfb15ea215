"""gunicorn settings for Toru, read from the Toru config in the environment.

``toru serve`` runs ``gunicorn -c <this file> toru.wsgi:application``; split mode's
``deploy/gunicorn.conf.py`` imports everything from here and overrides what it needs.

Hooks:
- ``on_starting`` (master, once): schema migration and the first-run admin, so split mode
  gets them too;
- ``post_fork`` (worker): ``PR_SET_PDEATHSIG`` so a worker never outlives a killed master;
- ``post_worker_init`` (worker): build the app before the first request arrives;
- ``child_exit`` (master): ``mark_process_dead`` so a dead worker's live gauges vanish.
"""

from __future__ import annotations

import os
import signal

from toru.config import load_config
from toru.osutil import die_with_parent
from toru.wsgi import prepare_environment

_config = prepare_environment()

bind = [_config.bind]
workers = _config.workers
worker_class = "sync"
# NOTE: a worker busy with a slow plugin must outlive the plugin timeout (504 comes from the
# supervisor after http_timeout), else gunicorn would kill it mid-request.
timeout = int(_config.http_timeout + 30)
graceful_timeout = 30
keepalive = 2
proc_name = "toru-web"
errorlog = "-"
loglevel = os.environ.get("TORU_GUNICORN_LOGLEVEL", "info")
accesslog = os.environ.get("TORU_ACCESS_LOG") or None
# gunicorn believes X-Forwarded-Proto only from these; keep it in line with Toru's own list.
forwarded_allow_ips = ",".join(p for p in _config.trusted_proxies if p != "unix") or "127.0.0.1"
limit_request_field_size = 16384
# gunicorn 23+ opens a management socket at a per-user default path that several Toru
# instances would fight over; Toru does not use it.
control_socket_disable = True


def on_starting(server) -> None:
    """Migrate the schema and create the first admin (split mode has no ``toru serve``)."""
    from toru.serve import ensure_first_admin

    ensure_first_admin(load_config(), quiet=bool(os.environ.get("TORU_SERVE_PARENT")))


def post_fork(server, worker) -> None:
    """A worker dies with its master (the master's own death is toru serve's business)."""
    die_with_parent(signal.SIGTERM, worker.ppid)  # the master's pid, set before the fork


def post_worker_init(worker) -> None:
    """Send the app's log to stderr next to gunicorn's, then build the app now so the first
    request does not pay for imports and set-up."""
    import logging

    from toru import wsgi

    logger = logging.getLogger("toru")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    wsgi.application.build()


def worker_exit(server, worker) -> None:
    """In the exiting worker: send the direct channel's last latency samples."""
    from toru.wsgi.direct import flush_reports

    flush_reports()


def child_exit(server, worker) -> None:
    """Drop the dead worker's live-gauge files (prometheus_client multiprocess mode)."""
    from toru.wsgi.metrics import mark_dead

    mark_dead(worker.pid)
