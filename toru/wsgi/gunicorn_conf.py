"""gunicorn settings for Toru, read from the Toru config in the environment.

``toru serve`` runs ``gunicorn -c <this file> toru.wsgi:application``; split mode's
``deploy/gunicorn.conf.py`` imports everything from here and overrides what it needs.

Hooks:
- ``on_starting`` (master, once): schema migration and the first-run admin, so split mode
  gets them too;
- ``post_fork`` (worker): ``PR_SET_PDEATHSIG`` so a worker never outlives a killed master;
- ``post_worker_init`` (worker): the app's log next to gunicorn's, and the header deadline
  for slow clients (toru/wsgi/slow_clients.py);
- ``child_exit`` (master): ``mark_process_dead`` so a dead worker's live gauges vanish.

Workers are gunicorn's native ``asgi`` worker on uvloop; the app (``toru.wsgi:application``)
is built in each worker at the ASGI lifespan startup, after the fork.
"""

from __future__ import annotations

import os
import signal

from toru.config import load_config
from toru.osutil import die_with_parent, drop_capabilities
from toru.wsgi import prepare_environment

_config = prepare_environment()

bind = [_config.bind]
workers = _config.workers
worker_class = "asgi"
asgi_loop = "uvloop"
# NOTE: the pure-Python HTTP parser even where gunicorn_h1c is installed (gunicorn would
# pick it): with h1c 0.6.10 on gunicorn 27.0.1 a keep-alive connection carrying 1 MiB
# request bodies was closed without an answer every few requests (the client gets
# RemoteDisconnected; tests/web/test_large_bodies.py, keep-alive test, fails with it).
http_parser = "python"
# NOTE: an asgi worker's loop sends the heartbeat every second whatever its requests do (a
# slow plugin costs a pending request, not the worker), so ``timeout`` only catches a stuck
# loop; gunicorn also uses it as the idle limit of a body read, behind Toru's own
# ``client_timeout`` for the whole body.
timeout = 30
graceful_timeout = 30
keepalive = 2
worker_connections = 1000
proc_name = "toru-web"
errorlog = "-"
loglevel = os.environ.get("TORU_GUNICORN_LOGLEVEL", "info")
accesslog = os.environ.get("TORU_ACCESS_LOG") or None
# NOTE: Toru alone decides what a forwarding header is worth (toru/wsgi/http.py
# client_info, from http.trusted_proxies). gunicorn would otherwise rewrite the ASGI scheme
# from X-Forwarded-Proto for loopback peers by default and for every Unix-socket peer
# whatever forwarded_allow_ips says; so it interprets none, and its list is Toru's IPs
# (empty when Toru trusts no address) for what else it gates (underscore header names).
secure_scheme_headers: dict[str, str] = {}
forwarded_allow_ips = ",".join(p for p in _config.trusted_proxies if p != "unix")
limit_request_field_size = 16384
# gunicorn 23+ opens a management socket at a per-user default path that several Toru
# instances would fight over; Toru does not use it.
control_socket_disable = True


def on_starting(server) -> None:
    """Migrate the schema and create the first admin (split mode has no ``toru serve``)."""
    from toru.home_modes import set_private_umask
    from toru.serve import ensure_first_admin

    set_private_umask()  # split mode: gunicorn is not started by `toru serve`
    if os.geteuid() != 0:  # systemd's AmbientCapabilities= are the supervisor's (plugin user)
        drop_capabilities()  # master and workers hold none (after exec: Python may need them)

    ensure_first_admin(load_config(), quiet=bool(os.environ.get("TORU_SERVE_PARENT")))


def post_fork(server, worker) -> None:
    """A worker dies with its master (the master's own death is toru serve's business);
    large bodies are kept off per-allocation mmap (toru_plugin_api/malloc.py)."""
    from toru_plugin_api.malloc import keep_big_buffers

    die_with_parent(signal.SIGTERM, worker.ppid)  # the master's pid, set before the fork
    keep_big_buffers()


def post_worker_init(worker) -> None:
    """Send the app's log to stderr next to gunicorn's; bound the time a new connection may
    take to send its headers (gunicorn has no such deadline of its own)."""
    import logging

    from toru.wsgi import slow_clients

    logger = logging.getLogger("toru")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
        )
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    slow_clients.install(_config.client_timeout)


def child_exit(server, worker) -> None:
    """Drop the dead worker's live-gauge files (prometheus_client multiprocess mode)."""
    from toru.wsgi.metrics import mark_dead

    mark_dead(worker.pid)
