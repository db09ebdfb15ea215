"""gunicorn configuration for split mode (``toru-web.service``).

    gunicorn -c deploy/gunicorn.conf.py toru.wsgi:application

Workers are gunicorn's native ``asgi`` worker on uvloop serving Toru's Falcon ASGI app.
Everything comes from Toru's config (``TORU_HOME``'s toru.toml and ``TORU_*`` env vars) via
``toru.wsgi.gunicorn_conf``, including the hooks: ``child_exit`` calls prometheus_client's
``mark_process_dead`` for every exited worker, ``post_fork`` ties workers to the master's
life, ``on_starting`` migrates the schema and creates the first admin, ``post_worker_init``
adds the header deadline for slow clients (``http.client_timeout``).
"""

import os

os.environ.setdefault("TORU_HOME", "/var/lib/toru")
os.environ.setdefault("TORU_BIND", "unix:/run/toru/web.sock")

from toru.wsgi.gunicorn_conf import *  # noqa: F403  (settings and hooks)

# The socket is group-accessible (0660) so nginx, in the toru group, can connect.
umask = 0o007
