"""Authentication, roles and CSRF (one middleware), plus the ``/api/auth`` resources.

Each resource declares ``auth = "public" | "user" | "admin" | "metrics"``; the middleware
enforces it before the responder runs. A session cookie authenticates browsers and requires
``X-CSRF-Token`` on state-changing methods; ``Authorization: Bearer`` authenticates
automation and needs no CSRF token (a browser never sends it on its own).
"""

from __future__ import annotations

import hmac
from typing import Any

import falcon
import falcon.asgi

from ..accounts import Accounts, Session, User, validate_password
from ..config import Config
from ..errors import BadRequest, Forbidden, Unauthorized
from ..session_cookie import COOKIE
from .http import client_info, field, read_json, send_json
from .pool import PasswordPool

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class AuthMiddleware:
    """Resolves the principal and applies the resource's ``auth`` level."""

    def __init__(self, config: Config, accounts: Accounts) -> None:
        self.config = config
        self.accounts = accounts
        self.trusted = frozenset(config.trusted_proxies)

    def principal(self, req: falcon.asgi.Request) -> tuple[User, str, Session | None] | None:
        """``(user, "token"|"session", session)`` or None; a bad bearer token is a 401.

        PERF: runs on the event loop: a cached lookup is a few µs, an uncached one a single
        indexed SQLite read (both well under 1 ms, see docs/operations.md).
        """
        header = req.get_header("Authorization")
        if header:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthorized("Authorization must be 'Bearer <api-token>'")
            user = self.accounts.token_user(token.strip())
            if user is None:
                raise Unauthorized("invalid API token", code="invalid_token")
            return user, "token", None
        values = req.get_cookie_values(COOKIE)
        if values:
            for value in values:
                session = self.accounts.session(value)
                if session is not None:
                    return session.user, "session", session
        return None

    async def process_resource(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, resource: Any, params: dict
    ) -> None:
        level = getattr(resource, "auth", "public" if resource is None else "user")
        req.context.user = None
        req.context.session = None
        if level == "public":
            return
        if level == "metrics":
            if self.config.metrics_public or client_info(req, self.trusted).is_local:
                return
            level = "user"
        found = self.principal(req)
        if found is None:
            raise Unauthorized("authentication required: log in or send a bearer token")
        user, kind, session = found
        req.context.user = user
        req.context.session = session
        if kind == "session" and req.method in UNSAFE_METHODS:
            sent = req.get_header("X-CSRF-Token") or ""
            if not hmac.compare_digest(sent.encode(), session.csrf_token.encode()):
                raise Forbidden("missing or wrong X-CSRF-Token header", code="csrf_failed")
        if level == "admin" and not user.is_admin:
            raise Forbidden("this needs the admin role", code="admin_required")


def _secure(req: falcon.asgi.Request, config: Config) -> bool:
    return client_info(req, frozenset(config.trusted_proxies)).scheme == "https"


class _PasswordChecked:
    """A resource that checks a password like a login: scrypt in the pool, the login rate
    limit per client and per user, a wrong password counted as a failed login."""

    def __init__(self, config: Config, accounts: Accounts, pool: PasswordPool) -> None:
        self.config = config
        self.accounts = accounts
        self.pool = pool

    async def verified(
        self, req: falcon.asgi.Request, username: str, password: str, wrong: str
    ) -> User:
        """The user, or 401 ``bad_credentials`` with ``wrong`` (429 past the rate limit)."""
        client = client_info(req, frozenset(self.config.trusted_proxies)).ip
        self.accounts.check_login_rate(client, username)
        user = await self.pool.run(self.accounts.authenticate, username, password)
        if user is None:
            self.accounts.record_login_failure(client, username)
            raise Unauthorized(wrong, code="bad_credentials")
        return user


class LoginResource(_PasswordChecked):
    auth = "public"

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(
            req, min(self.config.body_limit, 64 * 1024), self.config.client_timeout
        )
        username = field(body, "username")
        password = field(body, "password")
        if len(username) > 256 or len(password) > 1024:
            raise BadRequest("username or password too long")
        user = await self.verified(req, username, password, "wrong username or password")
        send_json(resp, _start_session(req, resp, self.config, self.accounts, user))


def _start_session(
    req: falcon.asgi.Request,
    resp: falcon.asgi.Response,
    config: Config,
    accounts: Accounts,
    user: User,
) -> dict[str, Any]:
    """A new session for ``user``: sets its cookie, returns ``{"user", "csrf_token"}``."""
    token, session = accounts.create_session(user)
    resp.set_cookie(
        COOKIE,
        token,
        max_age=int(config.session_ttl),
        path="/",
        secure=_secure(req, config),
        http_only=True,
        same_site="Strict",
    )
    return {"user": user.to_json(), "csrf_token": session.csrf_token}


class PasswordResource(_PasswordChecked):
    """``POST /api/auth/password`` ``{"current_password", "new_password"}``: any signed-in
    user changes their own password.

    The current password is checked like a login (scrypt in the pool, the same rate limit,
    a wrong one counts as a failed login), so a stolen session cannot lock its owner out
    without knowing the password. The change ends every session of the user; a browser that
    asked gets a new session (cookie and ``csrf_token`` in the reply), so only its *other*
    sessions end. API tokens stay valid, as with ``PATCH /api/users/NAME``.
    """

    auth = "user"

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req, 64 * 1024, self.config.client_timeout)
        current = field(body, "current_password")
        new = validate_password(field(body, "new_password"))
        if len(current) > 1024:
            raise BadRequest("current_password too long")
        username = req.context.user.username
        user = await self.verified(req, username, current, "the current password is wrong")
        await self.pool.run(self.accounts.set_password, username, new)
        if req.context.session is None:  # a bearer token: no session to keep
            send_json(resp, {"user": user.to_json(), "csrf_token": None})
            return
        send_json(resp, _start_session(req, resp, self.config, self.accounts, user))


class LogoutResource:
    auth = "user"

    def __init__(self, config: Config, accounts: Accounts) -> None:
        self.config = config
        self.accounts = accounts

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        for value in req.get_cookie_values(COOKIE) or ():
            self.accounts.delete_session(value)
        resp.unset_cookie(COOKIE, path="/")
        send_json(resp, {"ok": True})


class MeResource:
    auth = "user"

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        session = req.context.session
        send_json(
            resp,
            {
                "user": req.context.user.to_json(),
                "csrf_token": session.csrf_token if session else None,
            },
        )


class TokensResource:
    auth = "admin"

    def __init__(self, config: Config, accounts: Accounts) -> None:
        self.config = config
        self.accounts = accounts

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send_json(resp, self.accounts.list_tokens())

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req, 64 * 1024, self.config.client_timeout)
        name = field(body, "name")
        username = field(body, "username", required=False) or req.context.user.username
        send_json(resp, self.accounts.create_token(username, name), status=201)


class TokenResource:
    auth = "admin"

    def __init__(self, accounts: Accounts) -> None:
        self.accounts = accounts

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, token_id: str
    ) -> None:
        self.accounts.delete_token(token_id)
        send_json(resp, {"ok": True})
