"""The auth cache's WAL-index fast path (toru/wal_index.py) and SQLite's locks on ``-shm``.

The fast path maps ``var/toru.db-shm`` itself. Closing a descriptor of that file drops
every POSIX lock the process holds on it, SQLite's shared lock on the "DMS" byte among them
(the lock that says "this WAL-index is in use"); the next process to open the database then
believes it is the first and truncates and rebuilds ``-shm`` under the running workers.
These tests read the kernel's lock table (``/proc/locks``) to check that every process
using the database still holds that lock, and check that a change made through another
connection is seen after ``-shm`` was deleted and recreated (the last connection closing) or
rebuilt in place (after a process was killed), and after a WAL reset.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import apsw

from tests import timing
from tests.servers import ToruServer
from tests.supervisor.helpers import wait_for
from tests.web.procs import children, cmdline
from toru.store import Store

DMS = 128  # SQLite's unix VFS: the DMS lock byte of -shm (WALINDEX_LOCK_OFFSET + 8)


def shm_lock_holders(db: Path) -> set[int]:
    """Pids holding a lock on ``db``'s ``-shm`` DMS byte (from ``/proc/locks``)."""
    st = os.stat(f"{db}-shm")
    holders = set()
    with open("/proc/locks") as f:
        for line in f:
            fields = line.split()
            if fields[1] == "->":  # a waiter, not a holder
                continue
            dev_ino, start = fields[5], fields[6]
            if int(dev_ino.rsplit(":", 1)[1]) == st.st_ino and int(start) <= DMS:
                end = fields[7]
                if end == "EOF" or int(end) >= DMS:
                    holders.add(int(fields[4]))
    return holders


class FileChanges:
    """Counts writes and truncations of one file through the file API (inotify
    ``IN_MODIFY``). SQLite changes an existing ``-shm`` through its mapping only, which
    raises no event; truncating and re-growing it (a process that believes it is the
    first) does."""

    IN_MODIFY, IN_NONBLOCK = 0x2, 0o4000

    def __init__(self, path: Path) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(self.IN_NONBLOCK)
        assert self.fd >= 0 and libc.inotify_add_watch(self.fd, bytes(path), self.IN_MODIFY) >= 0

    def count(self) -> int:
        """Events since the last call."""
        n = 0
        with contextlib.suppress(BlockingIOError):
            while data := os.read(self.fd, 4096):
                n += len(data) // 16  # struct inotify_event without a name: 16 bytes
        return n

    def close(self) -> None:
        os.close(self.fd)


def commit_elsewhere(db: Path, sql: str) -> None:
    """``sql`` committed by another process, which then closes its connection."""
    code = f"import apsw; c = apsw.Connection({str(db)!r}); c.execute({sql!r}); c.close()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=timing.HTTP)


def fresh_db(tmp_path: Path) -> Path:
    db = tmp_path / "toru.db"
    Store(db).migrate()
    Store(db).connection().execute("CREATE TABLE t(x)")
    return db


# --------------------------------------------------------------------------- in-process


def test_the_fast_path_keeps_sqlites_locks_on_shm(tmp_path):
    """Taking the view (first data_version of a connection) and closing another thread's
    connection leave this process's DMS lock in place."""
    db = fresh_db(tmp_path)
    store = Store(db)
    store.data_version()
    store.data_version()
    assert store._local.wal is not None  # the fast path is in use
    assert os.getpid() in shm_lock_holders(db)

    view = store._local.wal
    seen = []

    def other_thread() -> None:
        mine = Store(db)
        mine.data_version()
        mine.data_version()
        seen.append(mine._local.wal)
        mine.close()

    t = threading.Thread(target=other_thread)
    t.start()
    t.join(timing.HTTP)
    assert seen == [view]  # one view per file per process
    assert os.getpid() in shm_lock_holders(db)
    commit_elsewhere(db, "INSERT INTO t VALUES (1)")
    assert os.path.exists(f"{db}-shm")  # the other process was not the last one
    assert os.getpid() in shm_lock_holders(db)


def test_a_recreated_shm_is_mapped_anew_and_commits_elsewhere_are_seen(tmp_path):
    """The last connection closing deletes ``-shm``; the next one creates a new file. A
    connection opened after that must watch the new file, not the old mapping."""
    db = fresh_db(tmp_path)
    store = Store(db)
    store.data_version()
    store.data_version()
    old = store._local.wal
    old_ino = os.stat(f"{db}-shm").st_ino
    store.close()
    commit_elsewhere(db, "INSERT INTO t VALUES (1)")  # the last connection: -shm deleted
    assert not os.path.exists(f"{db}-shm")
    other = apsw.Connection(str(db))  # creates a new -shm and stays open
    other.execute("INSERT INTO t VALUES (2)")
    assert os.stat(f"{db}-shm").st_ino != old_ino  # our old descriptor keeps the number
    v1 = store.data_version()
    assert store.data_version() == v1
    assert store._local.wal is not old and store._local.wal.ino == os.stat(f"{db}-shm").st_ino
    for i in range(3):  # each commit through the other connection is seen at once
        other.execute("INSERT INTO t VALUES (?)", (i,))
        v2 = store.data_version()
        assert v2 != v1, i
        assert store.data_version() == v2  # and the fast path holds again
        v1 = v2
    assert store.connection().execute("SELECT count(*) FROM t").get == 5
    other.close()


def test_a_shm_rebuilt_in_place_is_still_watched(tmp_path):
    """A process killed with the database open leaves ``-shm`` behind, unlocked; the next
    first connection truncates and rebuilds it in place (same file). The mapping taken
    before sees the rebuilt header, and commits elsewhere after it."""
    db = fresh_db(tmp_path)
    shm = Path(f"{db}-shm")
    store = Store(db)
    store.data_version()
    store.data_version()
    view = store._local.wal
    code = (
        "import apsw, sys, time; c = apsw.Connection(sys.argv[1]);"
        " c.execute('INSERT INTO t VALUES (1)'); print('in', flush=True); time.sleep(3600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"in\n"
        store.close()  # not the last connection: -shm stays
    finally:
        holder.kill()
        holder.wait()
    assert shm.stat().st_ino == view.ino and not shm_lock_holders(db)
    changes = FileChanges(shm)
    v1 = store.data_version()  # the first connection now: SQLite rebuilds -shm
    assert changes.count() > 0  # (the premise: it was truncated and written again)
    changes.close()
    assert store._local.wal is view
    assert store.data_version() == v1
    commit_elsewhere(db, "INSERT INTO t VALUES (2)")
    assert store.data_version() != v1
    assert store.connection().execute("SELECT count(*) FROM t").get == 2


def test_a_wal_reset_by_a_checkpoint_is_seen(tmp_path):
    """A checkpoint that restarts the WAL rewrites the header (new salts): the commit that
    follows is still seen through the fast path."""
    db = fresh_db(tmp_path)
    store = Store(db)
    store.data_version()
    v1 = store.data_version()
    other = apsw.Connection(str(db))
    for i in range(5):
        other.execute("INSERT INTO t VALUES (?)", (i,))
        other.wal_checkpoint(mode=apsw.SQLITE_CHECKPOINT_TRUNCATE)  # the next commit resets
        v2 = store.data_version()
        assert v2 != v1, i
        assert store.data_version() == v2
        v1 = v2
    other.close()


def test_a_store_opened_before_the_database_exists_uses_the_fast_path(tmp_path):
    db = tmp_path / "var" / "toru.db"
    store = Store(db)
    v1 = store.data_version()  # creates the file; WAL from the first statement
    assert store.data_version() == v1
    assert store._local.wal is not None
    store.connection().execute("CREATE TABLE t(x)")
    commit_elsewhere(db, "INSERT INTO t VALUES (1)")
    assert store.data_version() != v1


# --------------------------------------------------------------------------- end to end


def workers_of(server: ToruServer) -> list[int]:
    """The gunicorn worker processes of ``server`` (its gunicorn master's children)."""
    (master,) = [p for p in children(server.pid) if "gunicorn" in cmdline(p)]
    return sorted(children(master))


def supervisor_of(server: ToruServer) -> int | None:
    found = [p for p in children(server.pid) if "toru.cli supervisor" in cmdline(p)]
    return found[0] if found else None


def accepted_by(client: socket.socket, workers: list[int]) -> int | None:
    """Which of ``workers`` accepted this TCP connection (the server side's socket inode,
    from ``/proc/net/tcp``, among the workers' descriptors); None while not yet accepted."""
    port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
            inodes.add(f"socket:[{fields[9]}]")
    for pid in workers:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                        return pid
    return None


def use_on_every_worker(server: ToruServer, cookie: str, workers: list[int]) -> None:
    """Keep-alive connections until each worker has accepted one, then authenticated
    requests on each of them: every one must be 200."""
    by_worker: dict[int, http.client.HTTPConnection] = {}
    opened: list[http.client.HTTPConnection] = []

    def one_more() -> bool:
        conn = server.connection(timing.HTTP)
        conn.connect()
        opened.append(conn)
        pid = wait_for(lambda: accepted_by(conn.sock, workers), timing.WAIT, 0.01)
        by_worker.setdefault(pid, conn)
        return len(by_worker) == len(workers)

    try:
        wait_for(one_more, timing.WAIT, 0)
        for pid, conn in by_worker.items():
            for _ in range(5):
                conn.request("GET", "/api/plugins", headers={"Cookie": cookie})
                resp = conn.getresponse()
                body = resp.read()
                assert resp.status == 200, (pid, resp.status, body)
    finally:
        for conn in opened:
            conn.close()


def test_sessions_work_on_every_worker_across_a_supervisor_restart(short_home):
    """Through a real ``toru serve`` with 3 workers: after every worker used its fast path,
    each one still holds SQLite's DMS lock; the supervisor killed and restarted by ``toru
    serve`` therefore joins the live WAL-index instead of truncating and rebuilding it
    under the workers (as it did when they had lost the lock); a user added by
    the CLI and a session created in one worker are accepted by every worker at once."""
    with ToruServer(short_home, workers=3) as s:
        db = short_home / "var" / "toru.db"
        cookie, _ = s.login()
        workers = workers_of(s)
        assert len(workers) == 3, workers
        use_on_every_worker(s, cookie, workers)
        holders = shm_lock_holders(db)
        assert set(workers) <= holders, (workers, holders)

        changes = FileChanges(Path(f"{db}-shm"))
        old = supervisor_of(s)
        os.kill(old, signal.SIGKILL)
        wait_for(
            lambda: (
                supervisor_of(s) not in (None, old) and supervisor_of(s) in shm_lock_holders(db)
            ),
            timing.WAIT,
        )
        wait_for(lambda: s.request("GET", "/healthz")[0] == 200, timing.WAIT)
        assert changes.count() == 0  # it joined the WAL-index instead of rebuilding it
        changes.close()
        subprocess.run(  # another process writes users and sessions meanwhile
            [sys.executable, "-m", "toru.cli", "user", "--home", str(short_home), "add", "dora"],
            input="dora-pass-123\n",
            env=s.child_env(),
            check=True,
            capture_output=True,
            text=True,
            timeout=timing.WAIT,
        )
        for user, password in (("admin", None), ("dora", "dora-pass-123")):
            cookie, _ = s.login(user, password)
            use_on_every_worker(s, cookie, workers)
        assert set(workers) <= shm_lock_holders(db)
