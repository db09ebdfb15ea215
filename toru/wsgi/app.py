"""``create_app(config, ...)``: the Falcon ASGI application, dependencies passed in.

Tests build it with fakes (``control=``) and ``falcon.testing``'s ASGI client; gunicorn's
``asgi`` worker gets it through ``toru.wsgi:application``, which builds it lazily in each
worker after the fork (so no SQLite connection, thread or socket crosses a fork).
"""

from __future__ import annotations

from pathlib import Path

import falcon
import falcon.asgi
import falcon.media
import ujson

from ..accounts import Accounts
from ..config import Config
from ..store import Store
from ..supervisor.client import restart_timeout
from . import (
    auth,
    errors,
    frontend,
    health,
    metrics,
    plugin_install,
    plugins,
    proxy,
    system,
    users,
)
from .control import Control, ControlClient
from .headers import SecurityHeaders
from .metrics import MetricsMiddleware
from .pool import PasswordPool
from .routes import RouteTable
from .static import StaticFiles, default_webapp_dir

# scrypt off the loop: one thread per worker (workers default to the cores), two more
# logins may wait; beyond that 503 at once (toru/wsgi/pool.py).
PASSWORD_THREADS = 1
PASSWORD_BACKLOG = 2


class Lifecycle:
    """ASGI lifespan: on the worker's shutdown, drop the control connection and the pool and
    write the pending metric updates."""

    def __init__(self, control: Control, pool: PasswordPool) -> None:
        self.control = control
        self.pool = pool

    async def process_shutdown(self, scope: dict, event: dict) -> None:
        close = getattr(self.control, "close", None)
        if close is not None:
            close()
        self.pool.close()
        metrics.flush()


def create_app(
    config: Config,
    *,
    control: Control | None = None,
    accounts: Accounts | None = None,
    pool: PasswordPool | None = None,
    webapp_dir: Path | None = None,
) -> frontend.Frontend:
    """Build the ASGI app: the Falcon app behind ``frontend.Frontend`` (plugin routes).

    Args:
        config: the loaded configuration.
        control: the supervisor's control client (``call``/``http`` coroutines); defaults to
            one ``ControlClient`` over ``config.control_socket`` (one connection, multiplexed).
        accounts: user/session store; defaults to one over ``config.db_path``.
        pool: where password hashing runs; defaults to a ``PasswordPool`` of
            ``PASSWORD_THREADS`` threads.
        webapp_dir: the static UI; defaults to ``TORU_WEBAPP_DIR`` or the repo's ``webapp/``.
    """
    if control is None:
        control = ControlClient(
            config.control_socket, http_timeout=config.http_timeout + 5, max_frame=config.max_frame
        )
    routes = RouteTable(control)
    pool = pool or PasswordPool(PASSWORD_THREADS, PASSWORD_BACKLOG)
    if accounts is None:
        store = Store(config.db_path)
        accounts = Accounts(store, session_ttl=config.session_ttl, login_rate=config.login_rate)

    # NOTE: the Frontend runs the same middleware objects for plugin routes: add any here.
    middleware = [
        Lifecycle(control, pool),
        MetricsMiddleware(),
        SecurityHeaders(),
        auth.AuthMiddleware(config, accounts),
    ]
    app = falcon.asgi.App(media_type=falcon.MEDIA_JSON, middleware=middleware, cors_enable=False)
    json_handler = falcon.media.JSONHandler(
        dumps=lambda o: ujson.dumps(o, ensure_ascii=False, escape_forward_slashes=False),
        loads=ujson.loads,
    )
    app.req_options.media_handlers.update({falcon.MEDIA_JSON: json_handler})
    app.resp_options.media_handlers.update({falcon.MEDIA_JSON: json_handler})
    app.req_options.keep_blank_qs_values = True
    app.resp_options.secure_cookies_by_default = False
    errors.install(app)

    app.add_route("/healthz", health.HealthResource(control))
    app.add_route("/livez", health.LiveResource())
    app.add_route("/metrics", health.MetricsResource(config))

    app.add_route("/api/auth/login", auth.LoginResource(config, accounts, pool))
    app.add_route("/api/auth/logout", auth.LogoutResource(config, accounts))
    app.add_route("/api/auth/me", auth.MeResource())
    app.add_route("/api/auth/password", auth.PasswordResource(config, accounts, pool))
    app.add_route("/api/auth/tokens", auth.TokensResource(config, accounts))
    app.add_route("/api/auth/tokens/{token_id}", auth.TokenResource(accounts))

    app.add_route("/api/users", users.UsersResource(accounts, pool, config.client_timeout))
    app.add_route(
        "/api/users/{username}", users.UserResource(accounts, pool, config.client_timeout)
    )

    app.add_route("/api/system", system.SystemResource(control))
    app.add_route("/api/plugins", plugins.PluginsResource(control))
    app.add_route("/api/plugins/rescan", system.RescanResource(control))
    app.add_route("/api/plugins/install", plugin_install.InstallResource(control, config))
    app.add_route("/api/plugins/{plugin_id}", plugins.PluginResource(control))
    app.add_route(
        "/api/plugins/{plugin_id}/enable", plugins.PluginActionResource(control, "enable")
    )
    app.add_route(
        "/api/plugins/{plugin_id}/disable", plugins.PluginActionResource(control, "disable")
    )
    app.add_route(
        "/api/plugins/{plugin_id}/restart",
        plugins.PluginActionResource(control, "restart", restart_timeout(config)),
    )
    app.add_route(
        "/api/plugins/{plugin_id}/approve", plugins.PluginActionResource(control, "approve")
    )
    app.add_route(
        "/api/plugins/{plugin_id}/bundle.js",
        plugins.BundleResource(control, config.http_timeout + 5),
    )
    app.add_route("/api/plugins/{plugin_id}/logs", plugins.LogsResource(control))
    app.add_route("/api/plugins/{plugin_id}/events", plugins.EventsResource(control))
    app.add_route(
        "/api/plugins/{plugin_id}/kv",
        plugins.KvResource(control, config.body_limit, config.client_timeout),
    )
    app.add_route("/api/plugins/{plugin_id}/stats", plugins.StatsResource(control))

    route_resource = proxy.PluginRouteResource(config, control, routes)
    app.add_route(frontend.ROUTE_TEMPLATE, route_resource)
    app.add_route(frontend.REST_TEMPLATE, route_resource)

    app.add_sink(StaticFiles(webapp_dir or default_webapp_dir()), prefix="/")
    return frontend.Frontend(app, middleware, route_resource)
