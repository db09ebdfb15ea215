"""Integration: the proxy path, KV, logs and the worker client against a real supervisor."""

from __future__ import annotations

import json
import socket
import threading
import time

import pytest

from toru.errors import BadGateway, GatewayTimeout, SupervisorUnavailable, ToruError
from toru.supervisor.client import ControlClient
from toru_plugin_api.codec import Decoder, encode

from .. import timing
from .helpers import (
    SupervisorProc,
    enable_on_disk,
    kill_leftovers,
    make_plugin,
    pid_alive,
    wait_for,
)


def test_timeout_gives_504_and_late_answer_is_dropped(home):
    make_plugin(home / "plugins", "slow")
    enable_on_disk(home, "slow")
    # The timeout fires (0.5 s against a far longer sleep); the echo after it must not, so
    # it is sent once the late answer is in (health checks see it as progress, not a hang).
    late = timing.scaled(3)
    env = {"TORU_HTTP_TIMEOUT": "0.5", "TORU_HEALTH_INTERVAL": "30"}
    with SupervisorProc(home, env=env) as sup:
        pid = sup.wait_state("slow", "running")["pid"]
        with pytest.raises(GatewayTimeout) as err:
            sup.client.http("/slow", "GET", f"/sleep?s={late}")
        assert err.value.status == 504
        # The plugin answers in order: the late /sleep reply arrives first and must be dropped.
        time.sleep(late)
        for _ in range(20):  # retried only if a loaded box makes the echo time out too
            try:
                resp = sup.client.http("/slow", "GET", "/echo?after=1")
                break
            except GatewayTimeout:
                time.sleep(0.5)
        assert json.loads(resp.body)["path"] == "/echo?after=1"  # never the late /sleep reply
        info = sup.info("slow")
        assert info["pid"] == pid and info["state"] == "running"  # keeps running
        assert "timeout" in [e["event_type"] for e in info["events"]]


@pytest.mark.parametrize("mode", ["garbage", "huge-frame"])
def test_bad_frames_give_502_and_plugin_is_restarted(home, mode):
    make_plugin(home / "plugins", "bad", mode=mode)
    enable_on_disk(home, "bad")
    with SupervisorProc(home, env={"TORU_HEALTH_INTERVAL": "30"}) as sup:
        pid = sup.wait_state("bad", "running")["pid"]
        with pytest.raises(BadGateway) as err:
            sup.client.http("/bad", "GET", "/echo")
        assert "protocol error" in err.value.message
        if mode == "huge-frame":
            assert "exceeds the maximum frame size" in err.value.message
        wait_for(lambda: sup.info("bad")["restarts"] >= 1)
        assert not pid_alive(pid)
        crash = next(
            e for e in sup.call("events", {"plugin": "bad"}) if e["event_type"] == "crashed"
        )
        assert "protocol error" in crash["details"]["reason"]
        assert sup.call("ping")["ok"] is True


def test_hung_plugin_is_detected_and_restarted(home):
    make_plugin(home / "plugins", "hang", mode="hang")
    enable_on_disk(home, "hang")
    env = {"TORU_HEALTH_INTERVAL": "0.2", "TORU_HEALTH_TIMEOUT": "0.3"}
    with SupervisorProc(home, env=env) as sup:
        pid = sup.wait_state("hang", "running")["pid"]
        wait_for(lambda: sup.info("hang")["restarts"] >= 1)
        assert not pid_alive(pid)
        kinds = [e["event_type"] for e in sup.call("events", {"plugin": "hang"})]
        assert "unhealthy" in kinds and "crashed" in kinds and "restarted" in kinds


def test_no_socket_plugin_backs_off_with_reason(home):
    make_plugin(home / "plugins", "nosock", mode="no-socket")
    enable_on_disk(home, "nosock")
    with SupervisorProc(home, env={"TORU_START_TIMEOUT": "0.3"}) as sup:
        wait_for(lambda: sup.info("nosock")["consecutive_failures"] >= 1)
        info = sup.info("nosock")
        assert "did not create its socket" in info["error"]
        assert "TORU_START_TIMEOUT" in info["error"]
        crash = next(e for e in info["events"] if e["event_type"] == "crashed")
        assert crash["details"]["phase"] == "starting"


def _pipeline(sock_path, requests):
    """Send every request frame at once on one connection; replies by id."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(str(sock_path))
    s.settimeout(20)
    s.sendall(b"".join(encode(r) for r in requests))
    dec, got = Decoder(), {}
    while len(got) < len(requests):
        data = s.recv(65536)
        assert data, "supervisor closed the connection"
        for m in dec.feed(data):
            got[m["id"]] = m
    s.close()
    return got


def test_200_in_flight_across_3_plugins_all_answered_correctly(home):
    make_plugin(home / "plugins", "seq")
    make_plugin(home / "plugins", "ooo1", mode="ooo")
    make_plugin(home / "plugins", "ooo2", mode="ooo")
    enable_on_disk(home, "seq", "ooo1", "ooo2")
    with SupervisorProc(home) as sup:
        for p in ("seq", "ooo1", "ooo2"):
            sup.wait_state(p, "running")
        routes = ["/seq", "/ooo1", "/ooo2"]
        reqs = []
        for i in range(200):
            route = routes[i % 3]
            path = f"/echo/{i}"
            reqs.append(
                {
                    "v": 1,
                    "id": i,
                    "op": "http",
                    "args": {
                        "route": route,
                        "method": "GET",
                        "path": path,
                        "headers": {},
                        "body": str(i),
                    },
                }
            )
        results = {}
        threads = []

        def run(chunk):
            results.update(_pipeline(sup.socket, chunk))

        for k in range(4):
            t = threading.Thread(target=run, args=(reqs[k::4],))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(30)
        assert len(results) == 200
        for i, msg in results.items():
            assert msg["ok"], msg
            body = json.loads(msg["result"]["body"])
            assert body["path"] == f"/echo/{i}" and body["body"] == str(i)


def test_out_of_order_replies_are_matched_by_request_id(home):
    make_plugin(home / "plugins", "ooo", mode="ooo")
    enable_on_disk(home, "ooo")
    with SupervisorProc(home) as sup:
        sup.wait_state("ooo", "running")
        reqs = [
            {
                "v": 1,
                "id": i,
                "op": "http",
                "args": {
                    "route": "/ooo",
                    "method": "GET",
                    "path": f"/sleep?s={s}",
                    "headers": {},
                    "body": "",
                },
            }
            for i, s in enumerate([0.3, 0.2, 0.1, 0.0])
        ]
        got = _pipeline(sup.socket, reqs)
        for i, s in enumerate([0.3, 0.2, 0.1, 0.0]):
            assert json.loads(got[i]["result"]["body"])["slept"] == s


def test_t9_t10_t18_kv_via_plugin_channel_isolated_and_via_control(home):
    make_plugin(home / "plugins", "a")
    make_plugin(home / "plugins", "b")
    enable_on_disk(home, "a", "b")
    with SupervisorProc(home) as sup:
        for p in ("a", "b"):
            sup.wait_state(p, "running")
        http = sup.client.http
        assert json.loads(http("/a", "GET", "/kv/set?key=color&value=red").body) == {"value": "red"}
        assert json.loads(http("/a", "GET", "/kv/get?key=color").body) == {"value": "red"}
        # T10: b's namespace is its own, whatever it asks for
        assert json.loads(http("/b", "GET", "/kv/get?key=color").body) == {"value": None}
        http("/b", "GET", "/kv/set?key=color&value=blue")
        assert json.loads(http("/a", "GET", "/kv/get?key=color").body) == {"value": "red"}
        assert json.loads(http("/a", "GET", "/kv/list").body) == {"keys": ["color"]}
        # the HTTP API path: the control op kv
        assert sup.call("kv", {"plugin": "b", "action": "get", "key": "color"}) == {"value": "blue"}
        sup.call("kv", {"plugin": "a", "action": "set", "key": "size", "value": "L"})
        assert json.loads(http("/a", "GET", "/kv/get?key=size").body) == {"value": "L"}
        sup.call("kv", {"plugin": "a", "action": "delete", "key": "size"})
        assert sup.call("kv", {"plugin": "a", "action": "get", "key": "size"}) == {"value": None}
        assert sup.call("kv", {"plugin": "a", "action": "list"}) == {"keys": ["color"]}


def test_t11_acknowledged_kv_set_survives_kill9_of_supervisor(home):
    make_plugin(home / "plugins", "a")
    enable_on_disk(home, "a")
    sup = SupervisorProc(home).start()
    try:
        sup.wait_state("a", "running")
        for i in range(20):
            assert sup.client.http("/a", "GET", f"/kv/set?key=k{i}&value=v{i}").status == 200
        sup.kill9()
    finally:
        sup.stop()
        kill_leftovers(home)
    with SupervisorProc(home) as sup2:
        sup2.wait_state("a", "running")
        for i in range(20):
            assert sup2.call("kv", {"plugin": "a", "action": "get", "key": f"k{i}"}) == {
                "value": f"v{i}"
            }
        assert json.loads(sup2.client.http("/a", "GET", "/kv/get?key=k19").body) == {"value": "v19"}


def test_t20_t21_t22_logs_written_json_and_served_paged(home):
    make_plugin(home / "plugins", "talk")
    enable_on_disk(home, "talk")
    with SupervisorProc(home) as sup:
        sup.wait_state("talk", "running")
        sup.client.http("/talk", "GET", "/stderr?n=30")
        sup.client.http("/talk", "GET", "/json-log")
        log = home / "var" / "log" / "plugins" / "talk.log"
        wait_for(lambda: "structured" in log.read_text())
        lines = log.read_text().splitlines()
        entries = [json.loads(ln) for ln in lines]  # T21: every line is JSON
        for e in entries:
            assert {"timestamp", "level", "plugin", "message"} <= set(e)
            assert e["plugin"] == "talk"
        assert any(e["message"] == "line 0" and e["level"] == "warn" for e in entries)
        assert any(
            e["message"] == "hello on stdout from talk" and e["level"] == "info" for e in entries
        )
        structured = next(e for e in entries if e["message"] == "structured")
        assert structured["level"] == "error" and structured["code"] == 7
        page0 = sup.call("logs", {"plugin": "talk", "page": 0, "page_size": 10})
        assert page0["has_more"] and len(page0["entries"]) == 10
        assert page0["entries"][0]["message"] == "structured"  # newest first
        page1 = sup.call("logs", {"plugin": "talk", "page": 1, "page_size": 10})
        assert page1["entries"][0]["message"] == "line 20"
        errors = sup.call("logs", {"plugin": "talk", "level": "error"})
        assert [e["message"] for e in errors["entries"]] == ["structured"]
        warns = sup.call("logs", {"plugin": "talk", "level": "warn", "page_size": 1000})
        assert len(warns["entries"]) == 31


def test_stderr_flood_rotates_and_supervisor_stays_responsive(home):
    make_plugin(home / "plugins", "flood", mode="flood")
    enable_on_disk(home, "flood")
    env = {"TORU_LOG_MAX_BYTES": "200000", "TORU_LOG_BACKUPS": "2"}
    with SupervisorProc(home, env=env) as sup:
        sup.wait_state("flood", "running")
        log = home / "var" / "log" / "plugins" / "flood.log"
        for _ in range(20):  # answered promptly while the flood goes on
            assert sup.call("ping", timeout=timing.scaled(5))["ok"] is True
            assert sup.client.http("/flood", "GET", "/echo", timeout=timing.scaled(5)).status == 200
        wait_for(lambda: log.with_name("flood.log.2").exists(), 20)
        assert sup.call("list", timeout=timing.scaled(5))[0]["state"] == "running"
        # NOTE: stop the flood before looking at the files: while it runs, a rotation can
        # be between its renames (flood.log.1 briefly absent) when the test stats it.
        sup.call("disable", {"plugin": "flood"}, timeout=timing.scaled(30))
        assert not log.with_name("flood.log.3").exists()
        for p in (log, log.with_name("flood.log.1"), log.with_name("flood.log.2")):
            assert p.stat().st_size <= 200000 + 70 * 1024
        page = sup.call("logs", {"plugin": "flood", "page": 1, "page_size": 1000})
        assert page["entries"] and any(e["message"].startswith("flood ") for e in page["entries"])


def test_client_unavailable_in_bounded_time_then_reconnects(home):
    path = home / "run" / "supervisor.sock"
    client = ControlClient(path, timeout=timing.scaled(2))
    t0 = time.monotonic()
    with pytest.raises(SupervisorUnavailable) as err:
        client.call("ping")
    assert err.value.status == 503
    assert time.monotonic() - t0 < timing.scaled(2.5)
    # a stale socket file (no listener) also fails at once
    path.parent.mkdir(parents=True)
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    s.close()
    with pytest.raises(SupervisorUnavailable):
        client.call("ping")
    with SupervisorProc(home) as sup:
        assert client.call("ping")["ok"] is True
        sup.stop()
        with pytest.raises(SupervisorUnavailable):
            client.call("ping")
        sup.start()
        assert client.call("ping")["ok"] is True  # same client, reconnected
    client.close()


def test_control_protocol_errors(home):
    make_plugin(home / "plugins", "a")
    with SupervisorProc(home) as sup:
        from toru.errors import BadRequest, NotFound

        with pytest.raises(BadRequest):
            sup.call("no-such-op")
        with pytest.raises(NotFound):
            sup.call("get", {"plugin": "nope"})
        with pytest.raises(BadRequest):
            sup.call("logs", {"plugin": "a", "level": "loud"})
        with pytest.raises(BadRequest):
            sup.call("kv", {"plugin": "a", "action": "explode", "key": "x"})
        hello = sup.call("hello")
        assert hello["version"] == 1 and hello["pid"] == sup.proc.pid
        # a garbage frame closes that connection only
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(sup.socket))
        s.sendall(b"\xff\xff\xff\xff")
        s.settimeout(5)
        assert s.recv(10) == b""
        s.close()
        assert sup.call("ping")["ok"] is True


def test_plugin_closing_its_connection_gets_a_new_one_not_a_restart(home):
    make_plugin(home / "plugins", "once", mode="close-once")
    enable_on_disk(home, "once")
    with SupervisorProc(home, env={"TORU_HEALTH_INTERVAL": "30"}) as sup:
        pid = sup.wait_state("once", "running")["pid"]
        assert sup.client.http("/once", "GET", "/echo").status == 200  # then it closes
        wait_for(lambda: sup.client.http("/once", "GET", "/echo").status == 200)
        info = sup.info("once")
        assert info["pid"] == pid and info["restarts"] == 0 and info["state"] == "running"


def test_a_crash_traceback_is_logged_as_error(home):
    """A plugin dying of an exception: every line of its traceback is an ``error`` entry, so
    the "error and above" filter shows the crash (plain stderr stays ``warn``)."""
    make_plugin(home / "plugins", "boom")
    enable_on_disk(home, "boom")
    with SupervisorProc(home) as sup:
        sup.wait_state("boom", "running")
        sup.client.http("/boom", "GET", "/say?msg=just+chatty", timeout=timing.scaled(10))
        with pytest.raises(ToruError):
            sup.client.http("/boom", "GET", "/raise", timeout=timing.scaled(10))

        def errors():
            page = sup.call(
                "logs", {"plugin": "boom", "page": 0, "page_size": 100, "level": "error"}
            )
            return [e["message"] for e in page["entries"] if e.get("stream") == "stderr"]

        msgs = wait_for(lambda: (m := errors()) and any("RuntimeError" in x for x in m) and m, 30)
        assert any(m.startswith("Traceback (most recent call last)") for m in msgs), msgs
        assert any(m.lstrip().startswith('File "') for m in msgs), msgs
        assert "RuntimeError: plugin blew up" in msgs, msgs
        assert "just chatty" not in msgs  # a plain stderr line is not an error
        sup.call("disable", {"plugin": "boom"}, timeout=timing.scaled(30))
