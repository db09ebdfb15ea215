"""``toru serve`` as a process tree: clean SIGTERM (exit 0), T14 (enabled state survives a
restart), ``kill -9`` leaves nothing behind, and both children are restarted when they die —
the supervisor while clients keep sending (503 in the gap, then recovery, no worker restart).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from tests.servers import ToruServer
from tests.web.procs import (
    alive,
    children,
    descendants,
    find_child,
    kill_all,
    poll,
    wait_gone,
)
from tests.web.webtest_plugin import install

ENV = {"TORU_SHUTDOWN_GRACE": "2", "TORU_RESTART_BACKOFF": "0.5"}


def _poll(fn, timeout=30.0, interval=0.1):
    return poll(fn, timeout, interval)


def _status(s, path, **kw):
    try:
        return s.request("GET", path, timeout=10, **kw)[0]
    except OSError:
        return None


def test_sigterm_exit0_state_persists_and_kill9_leaves_nothing(short_home, example_plugins):
    plugins = [example_plugins["hello-python"], example_plugins["system-info"]]
    install(short_home / "plugins")
    s = ToruServer(short_home, plugins=plugins, enable=["hello-python", "web-test"], env=ENV)
    s.start()
    tree: set[int] = set()
    try:
        cookie, csrf = s.login()
        status, body = s.json(
            "POST", "/api/plugins/system-info/enable", {}, cookie=cookie, csrf=csrf
        )
        assert status == 200, body
        assert _poll(lambda: _status(s, "/api/plugins/route/system-info/", cookie=cookie) == 200)
        assert _poll(lambda: _status(s, "/api/plugins/route/webtest/pid", cookie=cookie) == 200)
        tree = descendants(s.pid)
        assert len(tree) >= 7  # supervisor, 3 plugins, gunicorn master, 2 workers

        # a request in flight when SIGTERM arrives still gets its answer (workers drain)
        inflight: list = []
        t = threading.Thread(
            target=lambda: inflight.append(
                s.request("GET", "/api/plugins/route/webtest/slow?ms=2000&id=d", cookie=cookie)
            )
        )
        t.start()
        assert _poll(
            lambda: (
                'toru_proxy_inflight{plugin="web-test"} 1.0'
                in s.request("GET", "/metrics")[2].decode()
            )
        ), "the slow request never got in flight"
        assert s.stop() == 0  # SIGTERM -> clean exit 0
        t.join(30)
        assert inflight and inflight[0][0] == 200 and json.loads(inflight[0][2]) == {"id": "d"}
        assert wait_gone(tree) == set(), "processes left after SIGTERM"

        # T14: the enabled state survives the restart
        s2 = ToruServer(short_home, env=ENV, bind=s.bind)
        s2.start()
        try:
            cookie, _ = s2.login()
            for pid in ("hello-python", "system-info"):
                _, info = s2.json("GET", f"/api/plugins/{pid}", cookie=cookie)
                assert info["enabled"], info
            assert _poll(
                lambda: _status(s2, "/api/plugins/route/system-info/", cookie=cookie) == 200
            )
            tree = descendants(s2.pid)
            assert len(tree) >= 6
            os.kill(s2.pid, signal.SIGKILL)
            left = wait_gone(tree)
            assert left == set(), f"kill -9 of toru serve left {sorted(left)}"
        finally:
            s2.stop()
    finally:
        s.stop()
        kill_all({p for p in tree if alive(p)})


def test_children_restarted_supervisor_gap_is_503(short_home, example_plugins):
    s = ToruServer(
        short_home, plugins=[example_plugins["hello-python"]], enable=["hello-python"], env=ENV
    )
    s.start()
    tree: set[int] = set()
    try:
        cookie, _ = s.login()
        sup = find_child(s.pid, "supervisor")
        master = find_child(s.pid, "gunicorn")
        assert sup and master
        workers = children(master)
        assert len(workers) == 2
        plugin_pids = children(sup)
        tree = descendants(s.pid)

        statuses: list[int | None] = []
        stop = threading.Event()

        def client():
            while not stop.is_set():
                statuses.append(_status(s, "/api/plugins/route/hello/echo", cookie=cookie))
                time.sleep(0.02)

        threads = [threading.Thread(target=client) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            _poll(lambda: len(statuses) >= 10)
            os.kill(sup, signal.SIGKILL)
            _poll(lambda: 503 in statuses, timeout=30, interval=0.02)
            mark = len(statuses)
            assert _poll(lambda: 200 in statuses[mark:], timeout=30)
            # Each worker reconnects on its own backoff (up to RECONNECT_BACKOFF[-1] s), so
            # one may still answer 503 while the other already answers 200: wait until both do.
            _poll(lambda: statuses[-5:] == [200] * 5, timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        assert 503 in statuses, "no 503 while the supervisor was gone"
        after = statuses[statuses.index(503) :]
        assert 200 in after, "no recovery after the supervisor restart"
        assert set(statuses) <= {200, 503}, set(statuses)
        assert statuses[-5:] == [200] * 5
        new_sup = find_child(s.pid, "supervisor")
        assert new_sup and new_sup != sup
        assert children(master) == workers, "gunicorn workers were restarted"
        assert wait_gone(plugin_pids) == set(), "the old supervisor's plugins survived it"
        assert _status(s, "/healthz") == 200

        # The gunicorn master dies: toru serve starts a new one, its workers die with it.
        os.kill(master, signal.SIGKILL)
        assert wait_gone(workers) == set()
        assert _poll(lambda: _status(s, "/healthz") == 200)
        new_master = find_child(s.pid, "gunicorn")
        assert new_master and new_master != master
        body = s.request("GET", "/api/plugins/route/hello/echo", cookie=cookie)[2]
        assert json.loads(body)["method"] == "GET"
        tree |= descendants(s.pid)
    finally:
        s.stop()
        kill_all({p for p in tree if alive(p)})


def test_taken_port_fails_fast(short_home):
    """A bind conflict is reported at once with exit 1, before anything is started."""
    import socket
    import subprocess
    import sys

    from tests.servers import ROOT

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cp = subprocess.run(
            [
                *(sys.executable, "-m", "toru.cli", "serve"),
                *("--home", str(short_home), "--bind", f"127.0.0.1:{port}"),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert cp.returncode == 1
    assert "cannot bind" in cp.stdout
    assert not (short_home / "run" / "supervisor.sock").exists()
