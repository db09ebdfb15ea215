"""Users, password hashes, sessions, API tokens and the login rate limit.

All of the web tier's SQL lives here, over ``Store.connection()`` (one APSW connection per
thread). Secrets are never stored: passwords as scrypt hashes, session and API tokens as
SHA-256 hashes (they are 256-bit random values, so a fast hash is enough), compared in
constant time where a comparison happens in Python.

PERF: token and session lookups (one per authenticated request) are cached in memory per
thread connection and revalidated on every request with ``PRAGMA data_version`` (~1 µs instead of a
JOIN). When another connection (another worker, the supervisor, the ``toru`` CLI, a shell
with sqlite3) has committed since, the cache reads the ``auth_generation`` counter that
triggers bump on every change to ``users``, ``sessions`` or ``api_tokens`` (schema 2), and
empties itself before the next lookup if it moved. So a revoked token, a deleted user or a
changed role takes effect on the very next request, while a plugin's KV writes leave the
cache alone. A connection's own commits do
not change its ``data_version``, so every method here that writes empties the cache itself;
writes to ``users``, ``sessions`` or ``api_tokens`` must therefore go through this class or
another connection. Session expiry is checked on every request, cached or not; unknown
tokens are never cached.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from .errors import BadRequest, Conflict, NotFound, TooManyRequests
from .store import Store, iso_utc

# NOTE: OWASP's scrypt recommendation (N=2^17, r=8, p=1) needs 128 * N * r = 128 MiB;
# hashlib's default maxmem (32 MiB) would refuse it, so allow a little more than needed.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_DKLEN = 32

ROLES = ("admin", "user")
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 1024
LOGIN_WINDOW_S = 300.0
TOKEN_PREFIX = "toru_"
R = TypeVar("R")
AUTH_CACHE_SIZE = 1024  # per map and thread connection; the oldest entry goes first


# --------------------------------------------------------------------------- passwords


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # NOTE: scrypt needs 128 * n * r bytes; hashlib's default maxmem (32 MiB) is too small.
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=132 * n * r + (1 << 20),
        dklen=dklen,
    )


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64); parameters travel with the hash for later upgrades."""
    salt = os.urandom(16)
    dk = _scrypt(password, salt, n, r, p, SCRYPT_DKLEN)
    b64 = base64.b64encode
    return f"scrypt${n}${r}${p}${b64(salt).decode()}${b64(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of ``password`` against a ``hash_password`` string."""
    try:
        scheme, n, r, p, salt_b64, dk_b64 = stored.split("$")
        if scheme != "scrypt":
            return False
        n_i, r_i, p_i = int(n), int(r), int(p)
        salt, want = base64.b64decode(salt_b64), base64.b64decode(dk_b64)
    except (ValueError, TypeError):
        return False
    try:
        got = _scrypt(password, salt, n_i, r_i, p_i, len(want))
    except ValueError:  # parameters out of range in a corrupt hash
        return False
    return hmac.compare_digest(got, want)


# A hash to verify against when the user does not exist, so a wrong username costs the same
# time as a wrong password (no user enumeration by timing). Computed once, lazily.
_DUMMY_HASH: str | None = None


def _dummy_hash() -> str:
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password(secrets.token_urlsafe(16))
    return _DUMMY_HASH


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class User:
    username: str
    role: str
    created_at: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def to_json(self) -> dict[str, Any]:
        return {"username": self.username, "role": self.role}


@dataclass(frozen=True)
class Session:
    user: User
    csrf_token: str
    expires_at: float


def validate_username(username: Any) -> str:
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise BadRequest(
            "username must be 1-64 characters: letters, digits, '_', '.', '@', '-' "
            "(starting with a letter or digit)",
            code="bad_username",
        )
    return username


def validate_password(password: Any) -> str:
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(
            f"password must be a string of {MIN_PASSWORD}-{MAX_PASSWORD} characters",
            code="bad_password",
        )
    return password


def validate_role(role: Any) -> str:
    if role not in ROLES:
        raise BadRequest("role must be 'admin' or 'user'", code="bad_role")
    return role


class _AuthCache:
    """Token and session lookups of one connection, valid while its data_version holds, or,
    when another connection committed, while the schema's auth generation holds."""

    __slots__ = ("generation", "sessions", "tokens", "version")

    def __init__(self) -> None:
        self.version: int | None = None
        self.generation: int | None = None
        # token -> [token id, last_used_at, User]; session cookie value -> Session.
        # NOTE: keyed by the secret itself, which this process holds anyway while it serves
        # the request: skips a SHA-256 per hit. A dict lookup compares strings only after a
        # full (randomised SipHash) hash match, so it leaks no usable timing.
        self.tokens: dict[str, list[Any]] = {}
        self.sessions: dict[str, Session] = {}

    def revalidate(self, version: int, generation: Callable[[], int | None]) -> None:
        """Keep the entries unless another connection changed what authentication reads.

        PERF: ``data_version`` moves on *any* commit elsewhere (a plugin's KV write, an
        event); only then is the generation read (one indexed row), and only its change
        empties the cache.
        """
        if version == self.version:
            return
        gen = generation()
        if gen is None or gen != self.generation:
            self.tokens.clear()
            self.sessions.clear()
        self.version = version
        self.generation = gen

    def invalidate(self) -> None:
        self.tokens.clear()
        self.sessions.clear()
        self.version = None
        self.generation = None

    @staticmethod
    def put(cache: dict[str, Any], key: str, value: Any) -> None:
        if len(cache) >= AUTH_CACHE_SIZE:
            del cache[next(iter(cache))]
        cache[key] = value


# --------------------------------------------------------------------------- accounts


def _refuse_last_admin(conn: Any, action: str) -> None:
    """409 when no other admin would be left (nobody could undo it)."""
    admins = conn.execute("SELECT count(*) FROM users WHERE role='admin'").fetchone()
    if admins[0] <= 1:
        raise Conflict(f"cannot {action} the last admin", code="last_admin")


def _writes(method: Callable[..., R]) -> Callable[..., R]:
    """Mark an ``Accounts`` method that writes: the auth cache is emptied when it returns."""

    @functools.wraps(method)
    def wrapper(self: Accounts, *args: Any, **kwargs: Any) -> R:
        try:
            return method(self, *args, **kwargs)
        finally:
            self._invalidate()

    return wrapper


class Accounts:
    """The web tier's account operations; cheap to construct, safe to share across threads."""

    def __init__(
        self,
        store: Store,
        *,
        session_ttl: float = 12 * 3600.0,
        login_rate: int = 10,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.session_ttl = session_ttl
        self.login_rate = login_rate
        self.clock = clock

    def _conn(self):
        return self.store.connection()

    def _auth_cache(self) -> _AuthCache:
        """This connection's cache, emptied first if another connection committed since."""
        cache = self.store.connection_cache("accounts.auth", _AuthCache)
        cache.revalidate(self.store.data_version(), self.store.auth_generation)
        return cache

    def _invalidate(self) -> None:
        """Empty the cache after a write through this connection (its data_version stays)."""
        self.store.connection_cache("accounts.auth", _AuthCache).invalidate()

    # ------------------------------------------------------------------ users

    def user_count(self) -> int:
        return self._conn().execute("SELECT count(*) FROM users").fetchone()[0]

    def get_user(self, username: str) -> User | None:
        row = (
            self._conn()
            .execute("SELECT username, role, created_at FROM users WHERE username=?", (username,))
            .fetchone()
        )
        return User(*row) if row else None

    def list_users(self) -> list[User]:
        rows = self._conn().execute(
            "SELECT username, role, created_at FROM users ORDER BY username"
        )
        return [User(*r) for r in rows]

    @_writes
    def create_user(self, username: str, password: str, role: str = "user") -> User:
        """Add a user; 409 if the name is taken."""
        validate_username(username)
        validate_password(password)
        validate_role(role)
        pw_hash = hash_password(password)
        created = iso_utc()
        cur = self._conn().execute(
            "INSERT INTO users(username, password_hash, role, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(username) DO NOTHING RETURNING username",
            (username, pw_hash, role, created),
        )
        # NOTE: always fetchall() a RETURNING statement: a half-read one stays "in progress"
        # and keeps its transaction open (the COMMIT of `with conn:` then fails with BUSY).
        if not cur.fetchall():
            raise Conflict(f"user {username!r} already exists", code="user_exists")
        return User(username, role, created)

    @_writes
    def set_password(self, username: str, password: str) -> None:
        """Change a password and end the user's sessions (tokens stay valid)."""
        validate_password(password)
        pw_hash = hash_password(password)
        conn = self._conn()
        with conn:
            cur = conn.execute(
                "UPDATE users SET password_hash=? WHERE username=? RETURNING username",
                (pw_hash, username),
            )
            if not cur.fetchall():
                raise NotFound(f"no user {username!r}", code="user_not_found")
            conn.execute("DELETE FROM sessions WHERE username=?", (username,))

    @_writes
    def set_role(self, username: str, role: str) -> User:
        """Change a user's role; the last admin cannot be demoted (nobody could undo it)."""
        role = validate_role(role)
        conn = self._conn()
        with conn:
            row = conn.execute("SELECT role FROM users WHERE username=?", (username,)).fetchone()
            if row is None:
                raise NotFound(f"no user {username!r}", code="user_not_found")
            if row[0] == "admin" and role != "admin":
                _refuse_last_admin(conn, "demote")
            conn.execute("UPDATE users SET role=? WHERE username=?", (role, username))
        user = self.get_user(username)
        assert user is not None
        return user

    @_writes
    def delete_user(self, username: str) -> None:
        """Remove a user with its sessions and tokens; the last admin cannot be removed."""
        conn = self._conn()
        with conn:
            row = conn.execute("SELECT role FROM users WHERE username=?", (username,)).fetchone()
            if row is None:
                raise NotFound(f"no user {username!r}", code="user_not_found")
            if row[0] == "admin":
                _refuse_last_admin(conn, "delete")
            # ON DELETE CASCADE needs foreign_keys=ON; delete explicitly so it never depends on it.
            conn.execute("DELETE FROM sessions WHERE username=?", (username,))
            conn.execute("DELETE FROM api_tokens WHERE username=?", (username,))
            conn.execute("DELETE FROM users WHERE username=?", (username,))

    @_writes
    def ensure_first_admin(self, password: str | None) -> str | None:
        """Create ``admin`` if there are no users; returns the password used, else None.

        Safe when several processes race: only the one whose INSERT lands gets a password back.
        """
        if self.user_count() > 0:
            return None
        pw = password or secrets.token_urlsafe(15)
        cur = self._conn().execute(
            "INSERT INTO users(username, password_hash, role, created_at) "
            "SELECT 'admin', ?, 'admin', ? WHERE NOT EXISTS (SELECT 1 FROM users) "
            "RETURNING username",
            (hash_password(pw), iso_utc()),
        )
        return pw if cur.fetchall() else None

    # ------------------------------------------------------------------ login

    def _failures(self, key: str, since: float) -> int:
        return (
            self._conn()
            .execute("SELECT count(*) FROM login_failures WHERE key=? AND at>?", (key, since))
            .fetchone()[0]
        )

    def check_login_rate(self, client: str, username: str) -> None:
        """429 when the client or the username had too many recent failures."""
        now = self.clock()
        since = now - LOGIN_WINDOW_S
        for key in (f"client:{client}", f"user:{username}"):
            if self._failures(key, since) >= self.login_rate:
                oldest = (
                    self._conn()
                    .execute(
                        "SELECT min(at) FROM login_failures WHERE key=? AND at>?", (key, since)
                    )
                    .fetchone()[0]
                )
                retry = max(1, int((oldest or now) + LOGIN_WINDOW_S - now) + 1)
                raise TooManyRequests(
                    "too many failed logins; try again later",
                    code="rate_limited",
                    retry_after=retry,
                )

    @_writes
    def record_login_failure(self, client: str, username: str) -> None:
        now = self.clock()
        conn = self._conn()
        with conn:
            conn.execute(
                "INSERT INTO login_failures(key, at) VALUES (?, ?), (?, ?)",
                (f"client:{client}", now, f"user:{username}", now),
            )
            conn.execute("DELETE FROM login_failures WHERE at<?", (now - LOGIN_WINDOW_S,))

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches; costs one scrypt either way."""
        row = (
            self._conn()
            .execute(
                "SELECT username, role, created_at, password_hash FROM users WHERE username=?",
                (username,),
            )
            .fetchone()
        )
        stored = row[3] if row else _dummy_hash()
        ok = verify_password(password, stored)
        if row is None or not ok:
            return None
        return User(row[0], row[1], row[2])

    # ------------------------------------------------------------------ sessions

    @_writes
    def create_session(self, user: User) -> tuple[str, Session]:
        """A new session; returns the cookie value (shown only here) and the session."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.clock()
        expires = now + self.session_ttl
        conn = self._conn()
        with conn:
            conn.execute("DELETE FROM sessions WHERE expires_at<?", (now,))
            conn.execute(
                "INSERT INTO sessions(token_hash, username, csrf_token, created_at, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (token_hash(token), user.username, csrf, now, expires),
            )
        return token, Session(user, csrf, expires)

    def session(self, token: str) -> Session | None:
        """The live session for a cookie value, or None (unknown or expired)."""
        if not token or len(token) > 256:
            return None
        cache = self._auth_cache()
        found = cache.sessions.get(token)
        if found is None:
            h = token_hash(token)
            row = (
                self._conn()
                .execute(
                    "SELECT s.csrf_token, s.expires_at, u.username, u.role, u.created_at "
                    "FROM sessions s JOIN users u ON u.username = s.username "
                    "WHERE s.token_hash=?",
                    (h,),
                )
                .fetchone()
            )
            if row is None:
                return None
            found = Session(User(row[2], row[3], row[4]), row[0], row[1])
            cache.put(cache.sessions, token, found)
        if found.expires_at <= self.clock():
            return None
        return found

    @_writes
    def delete_session(self, token: str) -> None:
        self._conn().execute("DELETE FROM sessions WHERE token_hash=?", (token_hash(token),))

    # ------------------------------------------------------------------ API tokens

    @_writes
    def create_token(self, username: str, name: str) -> dict[str, Any]:
        """A new API token for ``username``; the secret is in the result and nowhere else."""
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise BadRequest("token name must be a string of 1-100 characters", code="bad_name")
        if self.get_user(username) is None:
            raise NotFound(f"no user {username!r}", code="user_not_found")
        token_id = secrets.token_hex(8)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = self.clock()
        self._conn().execute(
            "INSERT INTO api_tokens(id, name, token_hash, username, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (token_id, name, token_hash(token), username, now),
        )
        return {
            "id": token_id,
            "name": name,
            "username": username,
            "token": token,
            "created_at": iso_utc(now),
        }

    def list_tokens(self, username: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT id, name, username, created_at, last_used_at FROM api_tokens"
        args: tuple = ()
        if username is not None:
            sql += " WHERE username=?"
            args = (username,)
        rows = self._conn().execute(sql + " ORDER BY created_at", args)
        return [
            {
                "id": r[0],
                "name": r[1],
                "username": r[2],
                "created_at": iso_utc(r[3]),
                "last_used_at": iso_utc(r[4]) if r[4] else None,
            }
            for r in rows
        ]

    @_writes
    def delete_token(self, token_id: str) -> None:
        cur = self._conn().execute("DELETE FROM api_tokens WHERE id=? RETURNING id", (token_id,))
        if not cur.fetchall():
            raise NotFound(f"no API token {token_id!r}", code="token_not_found")

    def token_user(self, token: str) -> User | None:
        """The user an API token belongs to, or None; notes the use (at most once a minute)."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 256:
            return None
        cache = self._auth_cache()
        entry = cache.tokens.get(token)
        if entry is None:
            row = (
                self._conn()
                .execute(
                    "SELECT t.id, t.last_used_at, u.username, u.role, u.created_at FROM "
                    "api_tokens t JOIN users u ON u.username = t.username WHERE t.token_hash=?",
                    (token_hash(token),),
                )
                .fetchone()
            )
            if row is None:
                return None
            entry = [row[0], row[1], User(row[2], row[3], row[4])]
            cache.put(cache.tokens, token, entry)
        now = self.clock()
        # PERF: a write per request would serialise every bearer request on the DB lock.
        if entry[1] is None or now - entry[1] > 60:
            # NOTE: this connection's own write leaves its data_version (and the cache) valid;
            # the cached entry is updated instead.
            self._conn().execute("UPDATE api_tokens SET last_used_at=? WHERE id=?", (now, entry[0]))
            entry[1] = now
        return entry[2]


def write_initial_password(path: Path, password: str) -> None:
    """Write the generated admin password for the operator, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, (password + "\n").encode())
    finally:
        os.close(fd)
