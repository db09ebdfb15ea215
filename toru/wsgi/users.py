"""``/api/users``: admin-only user management."""

from __future__ import annotations

import falcon
import falcon.asgi

from ..accounts import Accounts, validate_password, validate_role, validate_username
from ..errors import BadRequest, NotFound
from .http import field, read_json, send_json
from .pool import PasswordPool


def _user_json(u) -> dict:
    return {"username": u.username, "role": u.role, "created_at": u.created_at}


class _UsersAdmin:
    """Admin-only; password hashing goes to the worker's pool."""

    auth = "admin"

    def __init__(self, accounts: Accounts, pool: PasswordPool, body_timeout: float) -> None:
        self.accounts = accounts
        self.pool = pool
        self.body_timeout = body_timeout


class UsersResource(_UsersAdmin):
    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        send_json(resp, [_user_json(u) for u in self.accounts.list_users()])

    async def on_post(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        body = await read_json(req, 64 * 1024, self.body_timeout)
        username = validate_username(field(body, "username"))
        password = validate_password(field(body, "password"))
        role = validate_role(field(body, "role", required=False) or "user")
        user = await self.pool.run(self.accounts.create_user, username, password, role)
        send_json(resp, _user_json(user), 201)


class UserResource(_UsersAdmin):
    async def on_patch(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, username: str
    ) -> None:
        """Change a role and/or a password. A new password ends the user's sessions; the
        last admin cannot be demoted. Both take effect on the next request in every worker."""
        body = await read_json(req, 64 * 1024, self.body_timeout)
        role = field(body, "role", required=False)
        password = field(body, "password", required=False)
        if role is None and password is None:
            raise BadRequest("give a role, a password or both", code="missing_field")
        role = validate_role(role) if role is not None else None
        if password is not None:
            await self.pool.run(self.accounts.set_password, username, validate_password(password))
        user = self.accounts.set_role(username, role) if role is not None else None
        user = user or self.accounts.get_user(username)
        if user is None:
            raise NotFound(f"no user {username!r}", code="user_not_found")
        send_json(resp, _user_json(user))

    async def on_delete(
        self, req: falcon.asgi.Request, resp: falcon.asgi.Response, username: str
    ) -> None:
        self.accounts.delete_user(username)
        send_json(resp, {"ok": True})
