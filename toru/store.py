"""The one SQLite database of Toru (APSW, WAL): schema, migrations, KV, events, settings.

Every process (supervisor, gunicorn workers, CLI) opens the same file. One ``apsw.Connection``
per thread (APSW connections may not be shared across threads without serialising), WAL so
readers never block the writer, and a 5 s busy timeout so concurrent writers wait instead of
failing.

NOTE: durability. ``synchronous=NORMAL`` in WAL mode fsyncs only at checkpoints, so a commit
is in the WAL file in the OS page cache when ``execute`` returns. That survives ``kill -9`` of
the process (the kernel still owns the pages) but not a power loss of the last transactions.
"An acknowledged KV set survives kill -9 of the supervisor" is therefore guaranteed: the
supervisor answers the plugin only after the commit returned. (FULL would add an fsync per
commit for power-loss safety at ~100x the latency; not what a plugin's KV needs.)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import apsw

from .errors import StoreUnavailable
from .wal_index import WalIndex

__all__ = ["SCHEMA_VERSION", "Store"]

T = TypeVar("T")

# Each entry migrates from version i to i+1. Never edit a shipped entry; append a new one.
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE IF NOT EXISTS plugin_kv (
        plugin_id TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (plugin_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS plugin_events (
        id INTEGER PRIMARY KEY,
        plugin_id TEXT NOT NULL,
        event_type TEXT NOT NULL,
        details TEXT NOT NULL DEFAULT '{}',
        created_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS plugin_events_plugin ON plugin_events(plugin_id, id);
    CREATE INDEX IF NOT EXISTS plugin_events_created ON plugin_events(created_at);
    CREATE TABLE IF NOT EXISTS users (
        username TEXT PRIMARY KEY,
        password_hash TEXT NOT NULL,
        role TEXT NOT NULL CHECK(role IN ('admin','user')),
        created_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS sessions (
        token_hash TEXT PRIMARY KEY,
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        csrf_token TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX IF NOT EXISTS sessions_user ON sessions(username);
    CREATE TABLE IF NOT EXISTS api_tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        username TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
        created_at REAL NOT NULL,
        last_used_at REAL
    );
    CREATE TABLE IF NOT EXISTS login_failures (key TEXT NOT NULL, at REAL NOT NULL);
    CREATE INDEX IF NOT EXISTS login_failures_key_at ON login_failures(key, at);
    """,
    # 2: a counter of changes to what authentication reads, kept by triggers, so the workers'
    # token/session caches survive commits that do not touch it (plugin KV, events, login
    # failures, a token's last_used_at). See Accounts._auth_cache.
    """
    CREATE TABLE IF NOT EXISTS auth_generation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        gen INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO auth_generation(id, gen) VALUES (1, 0);
    CREATE TRIGGER IF NOT EXISTS auth_gen_users_insert AFTER INSERT ON users
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_users_update AFTER UPDATE ON users
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_users_delete AFTER DELETE ON users
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_sessions_insert AFTER INSERT ON sessions
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_sessions_update AFTER UPDATE ON sessions
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_sessions_delete AFTER DELETE ON sessions
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_api_tokens_insert AFTER INSERT ON api_tokens
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_api_tokens_update AFTER UPDATE OF id, name, token_hash, username, created_at ON api_tokens
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    CREATE TRIGGER IF NOT EXISTS auth_gen_api_tokens_delete AFTER DELETE ON api_tokens
    BEGIN UPDATE auth_generation SET gen = gen + 1 WHERE id = 1; END;
    """,
)
SCHEMA_VERSION = len(_MIGRATIONS)
EVENT_RETENTION_S = 7 * 24 * 3600


def iso_utc(t: float | None = None) -> str:
    """ISO-8601 UTC with milliseconds; sorts lexicographically like the time it names."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


class Store:
    """Handle on the database file; cheap to create, safe to share between threads."""

    def __init__(self, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self.busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self.damage: str | None = None  # what check_at_start found

    def connection(self) -> apsw.Connection:
        """This thread's connection, opened on first use (WAL, NORMAL, foreign keys on)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = apsw.Connection(str(self.path))
            try:
                conn.set_busy_timeout(self.busy_timeout_ms)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
            except (apsw.NotADBError, apsw.CorruptError, apsw.CantOpenError, apsw.IOError) as exc:
                conn.close()
                raise self.unusable(exc) from None
            self._local.conn = conn
            self._local.caches = {}
            self._local.wal = None  # this connection's WalIndex, opened by data_version
            self._local.wal_tried = False
            self._local.wal_head = None
            self._local.wal_version = 0
        return conn

    def unusable(self, exc: BaseException) -> StoreUnavailable:
        """The one-line error for a database file that cannot be used (names the file)."""
        what = {
            apsw.NotADBError: "is not an SQLite database",
            apsw.CorruptError: "is damaged",
            apsw.CantOpenError: "cannot be opened",
        }.get(type(exc), "cannot be used")
        return StoreUnavailable(
            f"the database {self.path} {what} ({exc}); it was left untouched: restore it "
            "from a backup or move it away to start with an empty one"
        )

    def quick_check(self) -> str | None:
        """``PRAGMA quick_check``: None when the file is sound, else what SQLite found.

        O(size of the database), so run at start, not per request.
        """
        try:
            rows = [r[0] for r in self.connection().execute("PRAGMA quick_check(5)")]
        except apsw.Error as exc:
            return str(exc)
        return None if rows == ["ok"] else "; ".join(str(r) for r in rows)

    def check_at_start(self) -> str | None:
        """``quick_check`` once at start; a damaged file stays reported by ``health`` (sticky:
        SQLite may keep working on the intact pages, but the operator must know)."""
        self.damage = self.quick_check()
        return self.damage

    def health(self) -> dict[str, Any]:
        """``{"ok", "error"?}`` for the control op ``ping`` (and so for ``/healthz``)."""
        problem = self.damage or self.ping()
        return {"ok": True} if problem is None else {"ok": False, "error": problem}

    def ping(self) -> str | None:
        """A cheap read that fails when the file is gone bad or unreadable; None when fine."""
        try:
            self.connection().execute("SELECT count(*) FROM schema_version").get  # noqa: B018
        except (apsw.Error, StoreUnavailable) as exc:
            return str(exc)
        return None

    def connection_cache(self, name: str, factory: Callable[[], T]) -> T:
        """The object named ``name`` that lives exactly as long as this thread's connection.

        For caches revalidated with ``PRAGMA data_version``, which is per connection: a new
        connection starts with fresh ones (``factory()``); see ``Accounts``.
        """
        self.connection()
        caches = self._local.caches
        cache = caches.get(name)
        if cache is None:
            cache = caches[name] = factory()
        return cache

    def data_version(self) -> int:
        """``PRAGMA data_version`` of this thread's connection.

        It changes when *another* connection (another worker, the supervisor, the CLI)
        commits; never for this connection's own writes. ``Connection.data_version()`` (the
        file control) is no substitute: it is only refreshed when a read transaction starts,
        so it misses other connections' commits until then.

        PERF: while the WAL-index header (toru/wal_index.py) is unchanged since the last
        PRAGMA, no connection committed, and that answer stands: no statement per request.
        """
        conn = self.connection()
        local = self._local
        wal = local.wal
        head = wal.header() if wal is not None else None  # NOTE: read before the PRAGMA
        if head is not None and head == local.wal_head:
            return local.wal_version
        version = conn.execute("PRAGMA data_version").get
        if wal is None and not local.wal_tried:  # after a read: -shm is open and stays
            local.wal_tried = True
            local.wal = WalIndex.of(self.path)
        local.wal_head, local.wal_version = head, version
        return version

    def auth_generation(self) -> int | None:
        """The counter the schema's triggers bump on every change to users, sessions or API
        tokens (not a token's ``last_used_at``); None on a database without it."""
        try:
            return self.connection().execute("SELECT gen FROM auth_generation WHERE id = 1").get
        except apsw.SQLError:  # not migrated to schema 2 (a read-only tool on an old file)
            return None

    def close(self) -> None:
        """Close this thread's connection (idempotent)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.wal = None  # the view is the process's (toru/wal_index.py)
            conn.close()
            self._local.conn = None
            self._local.caches = {}

    # ------------------------------------------------------------------ schema

    def migrate(self) -> int:
        """Bring the schema to ``SCHEMA_VERSION``; idempotent and safe from several processes.

        ``BEGIN IMMEDIATE`` takes the write lock before reading the version, so two processes
        starting together serialise instead of both applying a migration.
        """
        conn = self.connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            current = row[0] or 0 if row else 0
            for i in range(current, SCHEMA_VERSION):
                conn.execute(_MIGRATIONS[i])
                conn.execute("INSERT INTO schema_version(version) VALUES (?)", (i + 1,))
            conn.execute("COMMIT")
        except (apsw.CorruptError, apsw.NotADBError) as exc:  # damaged where the schema lives
            with contextlib.suppress(apsw.Error):
                conn.execute("ROLLBACK")
            raise self.unusable(exc) from None
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return SCHEMA_VERSION

    def instance_id(self) -> str:
        """This installation's UUID4, created on first call and stable afterwards."""
        conn = self.connection()
        conn.execute(
            "INSERT OR IGNORE INTO settings(key, value) VALUES ('instance_id', ?)",
            (str(uuid.uuid4()),),
        )
        return conn.execute("SELECT value FROM settings WHERE key='instance_id'").fetchone()[0]

    def get_setting(self, key: str) -> str | None:
        row = self.connection().execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def set_setting(self, key: str, value: str) -> None:
        self.connection().execute(
            "INSERT INTO settings(key, value) VALUES (?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, value),
        )

    # ------------------------------------------------------------------ plugin KV

    def kv_get(self, plugin_id: str, key: str) -> str | None:
        row = (
            self.connection()
            .execute("SELECT value FROM plugin_kv WHERE plugin_id=? AND key=?", (plugin_id, key))
            .fetchone()
        )
        return row[0] if row else None

    def kv_set(self, plugin_id: str, key: str, value: str) -> None:
        """Upsert; durable against a process kill once this returns (see module doc)."""
        self.connection().execute(
            "INSERT INTO plugin_kv(plugin_id, key, value, updated_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(plugin_id, key) DO UPDATE SET value=excluded.value, "
            "updated_at=excluded.updated_at",
            (plugin_id, key, value, time.time()),
        )

    def kv_delete(self, plugin_id: str, key: str) -> bool:
        conn = self.connection()
        conn.execute("DELETE FROM plugin_kv WHERE plugin_id=? AND key=?", (plugin_id, key))
        return conn.changes() > 0

    def kv_list(self, plugin_id: str, prefix: str = "", limit: int = 10000) -> list[str]:
        """Keys of one namespace, sorted; ``prefix`` matched literally (no LIKE wildcards)."""
        conn = self.connection()
        if prefix:
            rows = conn.execute(
                "SELECT key FROM plugin_kv WHERE plugin_id=? AND substr(key, 1, ?)=? "
                "ORDER BY key LIMIT ?",
                (plugin_id, len(prefix), prefix, limit),
            )
        else:
            rows = conn.execute(
                "SELECT key FROM plugin_kv WHERE plugin_id=? ORDER BY key LIMIT ?",
                (plugin_id, limit),
            )
        return [r[0] for r in rows]

    # ------------------------------------------------------------------ events

    def add_event(
        self, plugin_id: str, event_type: str, details: dict[str, Any] | None = None
    ) -> int:
        conn = self.connection()
        conn.execute(
            "INSERT INTO plugin_events(plugin_id, event_type, details, created_at) "
            "VALUES (?, ?, ?, ?)",
            (plugin_id, event_type, json.dumps(details or {}, default=str), iso_utc()),
        )
        return conn.last_insert_rowid()

    def events(self, plugin_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first."""
        conn = self.connection()
        if plugin_id is None:
            rows: Iterable[Any] = conn.execute(
                "SELECT id, plugin_id, event_type, details, created_at FROM plugin_events "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            )
        else:
            rows = conn.execute(
                "SELECT id, plugin_id, event_type, details, created_at FROM plugin_events "
                "WHERE plugin_id=? ORDER BY id DESC LIMIT ?",
                (plugin_id, limit),
            )
        out = []
        for eid, pid, etype, details, created in rows:
            try:
                d = json.loads(details) if details else {}
            except ValueError:
                d = {"raw": details}
            out.append(
                {
                    "id": eid,
                    "plugin_id": pid,
                    "event_type": etype,
                    "details": d,
                    "created_at": created,
                }
            )
        return out

    def prune_events(self, max_age_s: float = EVENT_RETENTION_S, now: float | None = None) -> int:
        """Delete events older than ``max_age_s``; returns how many went."""
        cutoff = iso_utc((time.time() if now is None else now) - max_age_s)
        conn = self.connection()
        conn.execute("DELETE FROM plugin_events WHERE created_at < ?", (cutoff,))
        return conn.changes()
