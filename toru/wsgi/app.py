"""``create_app(config, ...)``: the Falcon application, dependencies passed in.

Tests build it with fakes (``control=``) and ``falcon.testing``; gunicorn gets it through
``toru.wsgi:application``, which builds it lazily in each worker after the fork (so no
SQLite connection or socket crosses a fork).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import falcon
import falcon.media
import ujson

from ..accounts import Accounts
from ..config import Config
from ..store import Store
from . import auth, errors, health, plugins, proxy, users
from .metrics import MetricsMiddleware
from .static import StaticFiles, default_webapp_dir


class SecurityHeaders:
    """Conservative defaults on every response; API JSON is never cached."""

    def process_response(
        self, req: falcon.Request, resp: falcon.Response, resource: Any, req_succeeded: bool
    ) -> None:
        resp.set_header("X-Content-Type-Options", "nosniff")
        if resp.get_header("X-Frame-Options") is None:
            resp.set_header("X-Frame-Options", "DENY")
        if resp.get_header("Referrer-Policy") is None:
            resp.set_header("Referrer-Policy", "same-origin")
        if (
            req.path.startswith("/api/")
            and not req.path.startswith(proxy.PREFIX)
            and resp.get_header("Cache-Control") is None
        ):
            resp.set_header("Cache-Control", "no-store")


def _default_control(config: Config) -> Callable[[], Any]:
    from ..supervisor.client import ControlClient

    path = str(config.control_socket)
    kwargs = {"http_timeout": config.http_timeout + 5, "max_frame": config.max_frame}

    def control() -> Any:
        return ControlClient.for_thread(path, **kwargs)

    return control


def _default_direct(config: Config, control: Callable[[], Any]) -> Callable[[], Any] | None:
    if not config.direct_channel:
        return None
    from .direct import direct_channel_factory

    return direct_channel_factory(
        control,
        config.control_socket,
        config.route_generation_file,
        config.http_timeout,
        config.max_frame,
    )


def create_app(
    config: Config,
    *,
    control: Callable[[], Any] | None = None,
    direct: Callable[[], Any] | None = None,
    accounts: Accounts | None = None,
    webapp_dir: Path | None = None,
) -> falcon.App:
    """Build the WSGI app.

    Args:
        config: the loaded configuration.
        control: returns this thread's control-socket client (``call``/``http``); defaults
            to ``ControlClient.for_thread(config.control_socket)``.
        direct: returns this thread's ``DirectChannel`` (toru/wsgi/direct.py); by default
            one when ``control`` is the default and ``config.direct_channel`` is on.
        accounts: user/session store; defaults to one over ``config.db_path``.
        webapp_dir: the static UI; defaults to ``TORU_WEBAPP_DIR`` or the repo's ``webapp/``.
    """
    if control is None:
        control = _default_control(config)
        direct = direct or _default_direct(config, control)
    if accounts is None:
        store = Store(config.db_path)
        accounts = Accounts(store, session_ttl=config.session_ttl, login_rate=config.login_rate)

    app = falcon.App(
        media_type=falcon.MEDIA_JSON,
        middleware=[MetricsMiddleware(), SecurityHeaders(), auth.AuthMiddleware(config, accounts)],
        cors_enable=False,
    )
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

    app.add_route("/api/auth/login", auth.LoginResource(config, accounts))
    app.add_route("/api/auth/logout", auth.LogoutResource(config, accounts))
    app.add_route("/api/auth/me", auth.MeResource())
    app.add_route("/api/auth/tokens", auth.TokensResource(config, accounts))
    app.add_route("/api/auth/tokens/{token_id}", auth.TokenResource(accounts))

    app.add_route("/api/users", users.UsersResource(accounts))
    app.add_route("/api/users/{username}", users.UserResource(accounts))

    app.add_route("/api/plugins", plugins.PluginsResource(control))
    app.add_route("/api/plugins/{plugin_id}", plugins.PluginResource(control))
    app.add_route(
        "/api/plugins/{plugin_id}/enable", plugins.PluginActionResource(control, "enable")
    )
    app.add_route(
        "/api/plugins/{plugin_id}/disable", plugins.PluginActionResource(control, "disable")
    )
    app.add_route(
        "/api/plugins/{plugin_id}/bundle.js",
        plugins.BundleResource(control, config.http_timeout + 5),
    )
    app.add_route("/api/plugins/{plugin_id}/logs", plugins.LogsResource(control))
    app.add_route("/api/plugins/{plugin_id}/events", plugins.EventsResource(control))
    app.add_route("/api/plugins/{plugin_id}/kv", plugins.KvResource(control, config.body_limit))
    app.add_route("/api/plugins/{plugin_id}/stats", plugins.StatsResource(control))

    route_resource = proxy.PluginRouteResource(config, control, proxy.RouteNames(control), direct)
    app.add_route("/api/plugins/route/{route}", route_resource)
    app.add_route("/api/plugins/route/{route}/{rest:path}", route_resource)

    app.add_sink(StaticFiles(webapp_dir or default_webapp_dir()), prefix="/")
    return app
