"""The direct channel (toru/wsgi/direct.py) against a real ``toru serve``: requests to a
multi-connection SDK plugin go worker -> plugin without the supervisor, one-connection
plugins keep the supervisor path, and the supervisor still decides routing, still sees
every request's latency and every timeout.
"""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

from tests.servers import ToruServer
from tests.web.procs import children, find_child, poll, wait_gone
from tests.web.webtest_plugin import install
from toru.supervisor.client import ControlClient
from toru.supervisor.route_generation import open_generation, read_generation

ENV = {"TORU_SHUTDOWN_GRACE": "2", "TORU_RESTART_BACKOFF": "0.5", "TORU_HTTP_TIMEOUT": "2"}


def _server(home, example_plugins, workers=2, **env):
    install(home / "plugins")
    return ToruServer(
        home,
        plugins=[example_plugins["raw-python"]],
        enable=["web-test", "raw-python"],
        workers=workers,
        env={**ENV, **env},
    )


def _stats_count(s, token, plugin, cookie=None):
    status, body = s.json("GET", f"/api/plugins/{plugin}/stats", token=token or None, cookie=cookie)
    assert status == 200, body
    return sum(b["count"] for b in body["latency"])


def test_sdk_plugin_answers_while_the_supervisor_is_stopped(short_home, example_plugins):
    """The proof that requests bypass the supervisor: SIGSTOP it, the SDK plugin still answers
    every request. With the direct channel off this request would wait for the supervisor.

    One worker: an asgi worker may accept every warm-up request itself, and a worker whose
    route table is still cold would have to ask the stopped supervisor for it."""
    with _server(short_home, example_plugins, workers=1) as s:
        cookie, csrf = s.login()
        status, body = s.json("POST", "/api/auth/tokens", {"name": "t"}, cookie=cookie, csrf=csrf)
        assert status == 201 or status == 200, body
        token = body["token"]
        # Warm the worker's route table and its connection to the plugin.
        for _ in range(2):
            with ThreadPoolExecutor(2) as pool:
                statuses = list(
                    pool.map(
                        lambda i: s.request(
                            "GET", f"/api/plugins/route/webtest/slow?ms=300&id={i}", token=token
                        )[0],
                        range(2),
                    )
                )
            assert statuses == [200, 200]
        time.sleep(1.5)  # the workers' once-a-second report of the warm-up requests
        before = _stats_count(s, token, "web-test")
        sup = find_child(s.pid, "supervisor")
        assert sup is not None
        os.kill(sup, signal.SIGSTOP)
        try:
            for i in range(10):  # quickly: a report sent meanwhile waits at most 2 s
                status, _, body = s.request(
                    "GET", f"/api/plugins/route/webtest/slow?id=x{i}", token=token, timeout=5
                )
                assert status == 200 and f'"x{i}"' in body.decode(), (status, body)
        finally:
            os.kill(sup, signal.SIGCONT)
        # the one-connection raw plugin is not direct: it works through the supervisor
        status, _, body = s.request("GET", "/api/plugins/route/raw/", token=token)
        assert status == 200, body
        # the latencies measured in the workers reach the supervisor's stats (~1 s later)
        assert poll(lambda: _stats_count(s, token, "web-test") >= before + 10, 10)


def test_route_table_and_generation(short_home, example_plugins):
    """``routes`` lists only running multi-connection plugins; every change bumps the counter,
    and a disabled plugin's route is refused at once in every worker."""
    with _server(short_home, example_plugins) as s:
        cookie, csrf = s.login()
        client = ControlClient(short_home / "run" / "supervisor.sock")
        table = client.call("routes")
        assert set(table["routes"]) == {"/webtest"}, table  # not /raw: one connection only
        entry = table["routes"]["/webtest"]
        assert entry["plugin"] == "web-test" and entry["socket"].endswith("web-test/plugin.sock")
        mapping = open_generation(short_home / "run" / "routes.gen")
        assert mapping is not None
        assert read_generation(mapping) == table["generation"]

        path = "/api/plugins/route/webtest/pid"
        assert s.request("GET", path, cookie=cookie)[0] == 200
        gen = read_generation(mapping)
        status, body = s.json("POST", "/api/plugins/web-test/disable", {}, cookie=cookie, csrf=csrf)
        assert status == 200, body
        assert read_generation(mapping) > gen
        assert client.call("routes")["routes"] == {}
        for _ in range(8):  # both workers: none keeps sending to the stopped plugin
            assert s.request("GET", path, cookie=cookie)[0] == 404

        status, body = s.json("POST", "/api/plugins/web-test/enable", {}, cookie=cookie, csrf=csrf)
        assert status == 200, body
        assert poll(lambda: s.request("GET", path, cookie=cookie)[0] == 200, 15)
        assert "/webtest" in client.call("routes")["routes"]
        client.close()


def test_crash_restart_and_timeout_on_the_direct_path(short_home, example_plugins):
    """A plugin that dies mid-request is 502, the restarted one is reached on a new connection;
    a hung request is 504 after http_timeout and shows up as a ``timeout`` event."""
    with _server(short_home, example_plugins) as s:
        cookie, csrf = s.login()
        status, _, body = s.request("GET", "/api/plugins/route/webtest/pid", cookie=cookie)
        assert status == 200
        old_pid = int(body.decode().split(":")[1].strip(" }"))

        status, _, _ = s.request(
            "POST", "/api/plugins/route/webtest/crash", cookie=cookie, csrf=csrf
        )
        assert status == 502

        def new_pid():
            st, _, b = s.request("GET", "/api/plugins/route/webtest/pid", cookie=cookie)
            return st == 200 and int(b.decode().split(":")[1].strip(" }")) != old_pid

        assert poll(new_pid, 20)
        for _ in range(6):  # every worker reconnects to the new process
            assert s.request("GET", "/api/plugins/route/webtest/pid", cookie=cookie)[0] == 200

        t0 = time.monotonic()
        status, _, body = s.request("GET", "/api/plugins/route/webtest/hang", cookie=cookie)
        assert status == 504, body
        assert 1.5 < time.monotonic() - t0 < 10
        # the plugin keeps running and answering after a timeout
        assert s.request("GET", "/api/plugins/route/webtest/slow?id=a", cookie=cookie)[0] == 200

        def timeout_event():
            st, events = s.json("GET", "/api/plugins/web-test/events?limit=20", cookie=cookie)
            return st == 200 and any(
                e["event_type"] == "timeout" and (e.get("details") or {}).get("direct")
                for e in events
            )

        assert poll(timeout_event, 10)


def test_direct_channel_can_be_turned_off(short_home, example_plugins):
    """``TORU_DIRECT_CHANNEL=0``: every request takes the supervisor path (SIGSTOP on the
    supervisor now stalls the request, which then fails instead of being answered)."""
    with _server(short_home, example_plugins, TORU_DIRECT_CHANNEL="0") as s:
        cookie, _ = s.login()
        path = "/api/plugins/route/webtest/slow?id=z"
        for _ in range(4):
            assert s.request("GET", path, cookie=cookie)[0] == 200
        sup = find_child(s.pid, "supervisor")
        os.kill(sup, signal.SIGSTOP)
        try:
            try:
                status = s.request("GET", path, cookie=cookie, timeout=1.5)[0]
            except OSError:  # the client's timeout: the request waits on the stopped supervisor
                status = None
            assert status != 200
        finally:
            os.kill(sup, signal.SIGCONT)
        assert s.request("GET", path, cookie=cookie)[0] == 200


def test_worker_exit_sends_the_last_samples(short_home, example_plugins):
    """A worker stopped gracefully right after serving reports what it measured before the
    once-a-second report would have (gunicorn's ``worker_exit`` hook)."""
    with _server(short_home, example_plugins) as s:
        cookie, _ = s.login()
        path = "/api/plugins/route/webtest/slow?id=w"
        assert s.request("GET", path, cookie=cookie)[0] == 200
        time.sleep(1.5)  # the first request's sample is reported
        before = _stats_count(s, "", "web-test", cookie=cookie)
        for _ in range(10):
            assert s.request("GET", path, cookie=cookie)[0] == 200
        web = find_child(s.pid, "gunicorn")
        workers = children(web)
        for w in workers:
            os.kill(w, signal.SIGTERM)  # graceful: gunicorn starts a new one
        assert wait_gone(workers) == set()
        assert _stats_count(s, "", "web-test", cookie=cookie) >= before + 10
