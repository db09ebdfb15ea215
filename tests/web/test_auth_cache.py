"""The per-connection token/session cache (toru/accounts.py) never serves a stale answer.

Unit tests use two ``Store``s on one database file, i.e. two connections, as a worker and
"another worker / the CLI / the admin API elsewhere" would; the end-to-end test revokes,
demotes and deletes through other processes while a real ``toru serve`` answers.
"""

from __future__ import annotations

import inspect
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import apsw
import pytest

from tests.servers import ROOT, ToruServer
from toru import accounts as accounts_mod
from toru.accounts import AUTH_CACHE_SIZE, Accounts
from toru.store import Store

PW = "some-password-1"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair(tmp_path, monkeypatch):
    """``(worker, other, clock)``: Accounts over two connections to one database."""
    # scrypt at full cost is 0.5 s per hash; these tests are about caching, not hashing
    monkeypatch.setitem(accounts_mod.hash_password.__kwdefaults__, "n", 2**4)
    db = tmp_path / "toru.db"
    Store(db).migrate()
    clock = Clock()
    worker = Accounts(Store(db), clock=clock)
    other = Accounts(Store(db), clock=clock)
    worker.create_user("bob", PW, "admin")
    worker.create_user("carol", PW, "admin")
    return worker, other, clock


def _warm(acc: Accounts, token: str) -> None:
    for _ in range(3):
        assert acc.token_user(token) is not None


def test_token_revoked_by_another_connection(pair):
    worker, other, _ = pair
    t = worker.create_token("bob", "t")
    _warm(worker, t["token"])
    other.delete_token(t["id"])
    assert worker.token_user(t["token"]) is None


def test_token_revoked_through_the_same_connection(pair):
    """Own writes do not change data_version: the write itself must empty the cache."""
    worker, _, _ = pair
    t = worker.create_token("bob", "t")
    _warm(worker, t["token"])
    worker.delete_token(t["id"])
    assert worker.token_user(t["token"]) is None


def test_role_change_and_user_deletion_by_another_connection(pair):
    worker, other, _ = pair
    t = worker.create_token("bob", "t")
    cookie, _ = worker.create_session(worker.get_user("bob"))
    _warm(worker, t["token"])
    assert worker.session(cookie).user.is_admin
    # a demotion by whatever means (there is no API for it yet): raw SQL elsewhere
    other.store.connection().execute("UPDATE users SET role='user' WHERE username='bob'")
    assert worker.token_user(t["token"]).role == "user"
    assert worker.session(cookie).user.role == "user"
    other.delete_user("bob")
    assert worker.token_user(t["token"]) is None
    assert worker.session(cookie) is None


def test_user_deleted_through_the_same_connection(pair):
    worker, _, _ = pair
    t = worker.create_token("bob", "t")
    cookie, _ = worker.create_session(worker.get_user("bob"))
    _warm(worker, t["token"])
    assert worker.session(cookie) is not None
    worker.delete_user("bob")
    assert worker.token_user(t["token"]) is None
    assert worker.session(cookie) is None


def test_sessions_logout_password_change_and_expiry(pair):
    worker, other, clock = pair
    cookie, session = worker.create_session(worker.get_user("bob"))
    assert worker.session(cookie) == session
    worker.delete_session(cookie)  # logout in this worker
    assert worker.session(cookie) is None
    cookie, _ = worker.create_session(worker.get_user("bob"))
    assert worker.session(cookie) is not None
    other.set_password("bob", "another-password-2")  # `toru user passwd` ends sessions
    assert worker.session(cookie) is None
    cookie, session = worker.create_session(worker.get_user("bob"))
    assert worker.session(cookie) is not None  # cached now
    clock.now = session.expires_at  # expiry is checked on every request, cached or not
    assert worker.session(cookie) is None


def test_new_token_from_elsewhere_works_at_once(pair):
    """Unknown tokens are not cached, so a token made by another worker works at once."""
    worker, other, _ = pair
    assert worker.token_user("toru_unknown") is None
    t = other.create_token("carol", "t")
    assert worker.token_user(t["token"]).username == "carol"


def test_last_used_written_at_most_once_a_minute(pair):
    worker, other, clock = pair
    t = worker.create_token("bob", "t")
    worker.token_user(t["token"])
    first = other.list_tokens("bob")[0]["last_used_at"]
    assert first is not None
    clock.now += 30
    worker.token_user(t["token"])
    assert other.list_tokens("bob")[0]["last_used_at"] == first
    clock.now += 31
    worker.token_user(t["token"])
    assert other.list_tokens("bob")[0]["last_used_at"] != first


def test_cache_is_bounded(pair):
    worker, _, _ = pair
    tokens = [worker.create_token("bob", f"t{i}")["token"] for i in range(AUTH_CACHE_SIZE + 5)]
    for tok in tokens:
        assert worker.token_user(tok) is not None
    cache = worker.store.connection_cache("accounts.auth", dict)
    assert len(cache.tokens) == AUTH_CACHE_SIZE
    assert worker.token_user(tokens[0]) is not None  # evicted, looked up again


def test_threads_have_their_own_connection_and_cache(pair):
    """A write in one thread's connection changes the data_version of the other's."""
    worker, _, _ = pair
    t = worker.create_token("bob", "t")
    _warm(worker, t["token"])
    done = threading.Thread(target=lambda: worker.delete_token(t["id"]))
    done.start()
    done.join()
    assert worker.token_user(t["token"]) is None


def test_every_writing_method_empties_the_cache():
    """A new Accounts method that writes SQL must be marked ``@_writes`` (or be token_user)."""
    for name, fn in vars(Accounts).items():
        if not callable(fn) or name == "token_user":
            continue
        src = inspect.getsource(inspect.unwrap(fn))
        writes = any(w in src for w in ("INSERT", "UPDATE", "DELETE"))
        assert writes == hasattr(fn, "__wrapped__"), name


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def srv(example_plugins):
    home = Path(tempfile.mkdtemp(prefix="toru-ac-", dir="/tmp"))
    s = ToruServer(
        home, plugins=[example_plugins["hello-python"]], enable=["hello-python"], workers=2
    )
    s.start()
    try:
        s.admin = s.login()
        yield s
    finally:
        s.stop()
        shutil.rmtree(home, ignore_errors=True)


def _admin(s, method, path, body=None):
    return s.json(method, path, body, cookie=s.admin[0], csrf=s.admin[1])


def _new_user(s, name, role):
    status, body = _admin(s, "POST", "/api/users", {"username": name, "password": PW, "role": role})
    assert status == 201, body
    status, body = _admin(s, "POST", "/api/auth/tokens", {"name": "t", "username": name})
    assert status == 201, body
    return body


def _role(data: bytes) -> str:
    return {k.lower(): v for k, v in json.loads(data)["headers"].items()}["x-toru-role"]


def _statuses(s, path, n=12, **kw):
    """``n`` requests; with 2 workers both have served (and cached) the token by then."""
    return {s.request("GET", path, **kw)[0] for _ in range(n)}


def test_e2e_revoked_token_is_refused_at_once(srv):
    tok = _new_user(srv, "rev", "user")
    assert _statuses(srv, "/api/auth/me", token=tok["token"]) == {200}
    status, _ = _admin(srv, "DELETE", f"/api/auth/tokens/{tok['id']}")
    assert status == 200
    assert _statuses(srv, "/api/auth/me", token=tok["token"]) == {401}


def test_e2e_demoted_admin_loses_admin_at_once(srv):
    tok = _new_user(srv, "dem", "admin")
    assert _statuses(srv, "/api/users", token=tok["token"]) == {200}
    status, _, data = srv.request("GET", "/api/plugins/route/hello/echo", token=tok["token"])
    assert status == 200 and _role(data) == "admin"
    db = apsw.Connection(str(srv.home / "var" / "toru.db"))
    db.set_busy_timeout(5000)
    try:
        db.execute("UPDATE users SET role='user' WHERE username='dem'")
    finally:
        db.close()
    assert _statuses(srv, "/api/users", token=tok["token"]) == {403}
    for _ in range(6):
        status, _, data = srv.request("GET", "/api/plugins/route/hello/echo", token=tok["token"])
        assert status == 200 and _role(data) == "user"


def test_e2e_deleted_user_token_and_session_fail_at_once(srv):
    tok = _new_user(srv, "gone", "user")
    cookie, _ = srv.login("gone", PW)
    assert _statuses(srv, "/api/auth/me", token=tok["token"]) == {200}
    assert _statuses(srv, "/api/auth/me", cookie=cookie) == {200}
    status, _ = _admin(srv, "DELETE", "/api/users/gone")
    assert status == 200
    assert _statuses(srv, "/api/auth/me", token=tok["token"]) == {401}
    assert _statuses(srv, "/api/auth/me", cookie=cookie) == {401}


def test_e2e_cli_password_change_ends_cached_sessions(srv):
    _new_user(srv, "pwd", "user")
    cookie, _ = srv.login("pwd", PW)
    assert _statuses(srv, "/api/auth/me", cookie=cookie) == {200}
    cp = subprocess.run(
        [sys.executable, "-m", "toru.cli", "user", "--home", str(srv.home), "passwd", "pwd"],
        input="a-new-password-9\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=srv.child_env(),
        timeout=60,
    )
    assert cp.returncode == 0, cp.stderr
    assert _statuses(srv, "/api/auth/me", cookie=cookie) == {401}


def test_e2e_cli_token_works_at_once(srv):
    _new_user(srv, "cli", "user")
    assert _statuses(srv, "/api/auth/me", token="toru_not-yet") == {401}
    token = srv.toru("user", "--home", str(srv.home), "token", "cli").strip()
    assert _statuses(srv, "/api/auth/me", token=token) == {200}


def test_unrelated_commits_elsewhere_keep_the_cache(pair):
    """Plugin KV writes, events and a token's last_used_at (other connections) move
    data_version but not the auth generation: the cached entries stay."""
    worker, other, _ = pair
    t = worker.create_token("bob", "t")
    _warm(worker, t["token"])
    cache = worker.store.connection_cache("accounts.auth", accounts_mod._AuthCache)
    entry = cache.tokens[t["token"]]
    other.store.kv_set("some-plugin", "counter", "1")
    other.store.connection().execute(
        "UPDATE api_tokens SET last_used_at = last_used_at + 1 WHERE id = ?", (t["id"],)
    )
    assert worker.token_user(t["token"]) is not None
    assert cache.tokens[t["token"]] is entry  # kept, not re-read from the database
    # ...while an auth change by raw SQL elsewhere (no Accounts method) still empties it
    other.store.connection().execute("UPDATE users SET role = 'user' WHERE username = 'bob'")
    assert worker.token_user(t["token"]).role == "user"


def test_a_database_without_the_generation_still_invalidates(pair):
    """Before migration 2 (no counter) any commit elsewhere empties the cache, as before."""
    worker, other, _ = pair
    t = worker.create_token("bob", "t")
    _warm(worker, t["token"])
    conn = other.store.connection()
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'"):
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE auth_generation")
    other.store.connection().execute("UPDATE users SET role = 'user' WHERE username = 'bob'")
    assert worker.token_user(t["token"]).role == "user"


def test_a_cached_lookup_runs_no_sql_until_another_connection_commits(pair):
    """PERF: the revalidation reads the WAL-index header (toru/wal_index.py), not SQLite,
    while nothing was committed; any commit elsewhere, even one right after the last check,
    is still seen by the next lookup."""
    worker, other, _ = pair
    t = worker.create_token("bob", "t")
    _warm(worker, t["token"])
    statements: list[str] = []
    worker.store.connection().exec_trace = lambda cursor, sql, bindings: (
        statements.append(sql) or True
    )
    for _ in range(50):
        assert worker.token_user(t["token"]) is not None
    assert statements == []
    for i in range(3):  # back to back: each commit is seen by the next lookup
        role = ("user", "admin")[i % 2]
        other.store.connection().execute(
            "UPDATE users SET role = ? WHERE username = 'bob'", (role,)
        )
        assert worker.token_user(t["token"]).role == role
    assert statements  # those lookups asked SQLite
    other.delete_token(t["id"])
    assert worker.token_user(t["token"]) is None
