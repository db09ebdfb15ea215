"""The SDK runtime over real Unix sockets: concurrency, init, errors, bundle, probe, exits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests import timing
from tests.sdk.sdk_plugins import SlowFast
from toru_plugin_api import PluginError, PluginMetadata, ToruPlugin, route
from toru_plugin_api.blocking import Channel
from toru_plugin_api.codec import HEADER, ProtocolError, encode, encode_payload
from toru_plugin_api.messages import HttpRequest, http_request_message
from toru_plugin_api.testing import PluginHarness


def _wait_exit(proc: subprocess.Popen, timeout: float = 5.0) -> int:
    try:
        return proc.wait(timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_concurrent_requests_answered_out_of_order_by_request_id():
    with PluginHarness.in_process(SlowFast()) as h:
        sock = h.connect()
        reader = Channel(sock)
        delays = [300, 0, 150, 50]
        frames = b"".join(
            encode(http_request_message(f"r{d}", HttpRequest("GET", f"/sleep/{d}"))) for d in delays
        )
        sock.sendall(frames)
        got = [reader.read(timing.WAIT) for _ in delays]
        order = [m["request_id"] for m in got]
        assert sorted(order) == sorted(f"r{d}" for d in delays)
        assert order[0] == "r0" and order[-1] == "r300"  # the fast one did not wait for the slow
        for m in got:
            assert json.loads(m["payload"]["body"]) == {"slept": int(m["request_id"][1:])}
        sock.close()


def test_several_connections_are_served_at_once():
    with PluginHarness.in_process(SlowFast()) as h:
        socks = [h.connect() for _ in range(3)]
        for i, s in enumerate(socks):
            s.sendall(encode(http_request_message(f"c{i}", HttpRequest("GET", "/sleep/100"))))
        for i, s in enumerate(socks):
            assert Channel(s).read(timing.WAIT)["request_id"] == f"c{i}"
            s.close()


def test_an_integer_request_id_is_echoed_unchanged():
    """docs/plugins/PROTOCOL.md section 4: ids are strings, but an integer is copied as is."""
    with PluginHarness.in_process(SlowFast()) as h:
        ch = Channel(h.connect())
        ch.send({"type": "http", "request_id": 7, "payload": {"method": "GET", "path": "/sleep/0"}})
        ch.send({"type": "http", "request_id": "8", "payload": {"method": "GET", "path": "/x"}})
        got = {
            m["payload"]["status"]: m["request_id"] for m in (ch.read(timing.WAIT) for _ in "ab")
        }
        ch.close()
    assert got == {200: 7, 404: "8"}
    assert type(got[200]) is int


def test_init_runs_once_with_the_instance_id_and_config():
    plugin = SlowFast()
    with PluginHarness.in_process(plugin, instance_id="inst-42", config={"a": 1}) as h:
        assert h.request("GET", "/whoami").json() == {"instance_id": "inst-42", "inits": 1}
        h.send(*h._http_message("x", "GET", "/", None, None, None))
        assert h.request("GET", "/whoami").json()["inits"] == 1
        assert plugin.ctx.config == {"a": 1}
    assert plugin.shutdowns == 1


def test_request_before_init_initialises_lazily():
    with PluginHarness.in_process(SlowFast(), init=False, instance_id="lazy") as h:
        assert h.request("GET", "/whoami").json() == {"instance_id": "lazy", "inits": 1}


def test_routing_params_errors_and_405():
    with PluginHarness.in_process(SlowFast()) as h:
        assert h.request("GET", "/files/a/b/c.txt").json() == {"name": "a/b/c.txt"}
        assert h.request("GET", "/sleep/0/").status == 200  # trailing slash tolerated
        assert h.request("GET", "/nowhere").status == 404
        r = h.request("DELETE", "/whoami")
        assert r.status == 405 and r.header("Allow") == "GET"
        r = h.request("GET", "/teapot")
        assert r.status == 418 and r.json() == {"error": "teapot", "message": "short and stout"}
        r = h.request("GET", "/boom")
        assert r.status == 500 and r.json()["error"] == "plugin_error"
        assert "kaboom" not in r.text  # internals stay in the log, not in the reply
        assert h.request("HEAD", "/whoami").body == b""


def test_bundle_and_health_probe_are_answered_by_the_sdk():
    with PluginHarness.in_process(SlowFast()) as h:
        r = h.request("GET", "/bundle.js")
        assert r.status == 200 and r.header("Content-Type").startswith("application/javascript")
        assert b"ToruPlugins" in r.body
        r = h.request("GET", "/health", headers={"X-Toru-Probe": "1"})
        assert (r.status, r.json()) == (200, {"status": "ok"})
        assert h.request("GET", "/health").status == 404  # without the probe header it is a route


def test_malformed_frame_closes_only_that_connection():
    with PluginHarness.in_process(SlowFast()) as h:
        bad = h.connect()
        bad.sendall(encode_payload(b"{nope"))
        assert bad.recv(10) == b""
        bad.close()
        huge = h.connect()
        huge.sendall(HEADER.pack(0xFFFFFFFF))
        assert huge.recv(10) == b""
        huge.close()
        assert h.request("GET", "/sleep/0").status == 200


def test_plugin_without_bundle_answers_404_for_it():
    class NoUi(ToruPlugin):
        metadata = {"id": "no-ui", "name": "No UI", "version": "1", "route": "/no-ui"}

    with PluginHarness.in_process(NoUi()) as h:
        assert h.request("GET", "/bundle.js").status == 404


def test_metadata_dict_is_validated_at_class_creation():
    with pytest.raises(Exception, match="route"):

        class Bad(ToruPlugin):
            metadata = {"id": "bad", "name": "Bad", "version": "1", "route": "/a/b"}

    assert isinstance(SlowFast.metadata, PluginMetadata)


# ------------------------------------------------------------------ as a process


def test_metadata_flag(sdk_plugin_exe: Path):
    out = subprocess.run(
        [sdk_plugin_exe, "--metadata"], capture_output=True, check=True, timeout=10
    )
    assert json.loads(out.stdout) == {
        "id": "slow-fast",
        "name": "Slow Fast",
        "version": "0.1",
        "icon": "",
        "route": "/sf",
        "multi_connection": True,  # the SDK serves every connection it accepts
        "capabilities": ["binary_bodies"],  # and reads and answers binary frames
    }


def test_metadata_multi_connection_is_validated():
    base = {"id": "m", "name": "M", "version": "1", "route": "/m"}
    assert PluginMetadata.from_json(base).multi_connection is False
    assert PluginMetadata.from_json({**base, "multi_connection": True}).multi_connection
    assert "multi_connection" not in PluginMetadata.from_json(base).to_json()
    with pytest.raises(ProtocolError, match="multi_connection"):
        PluginMetadata.from_json({**base, "multi_connection": "yes"})


def test_started_by_hand_explains_and_exits_1(sdk_plugin_exe: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORU_")}
    out = subprocess.run([sdk_plugin_exe], capture_output=True, env=env, timeout=10)
    assert out.returncode == 1
    assert b"started by the Toru host" in out.stderr


def test_shutdown_exits_0_and_removes_the_socket(sdk_plugin_exe: Path):
    with PluginHarness.subprocess(sdk_plugin_exe) as h:
        assert h.request("GET", "/sleep/0").status == 200
        assert h.shutdown(5) == 0
        assert not os.path.exists(h.socket_path)
        logs = h.logs()
    assert {"timestamp", "level", "plugin", "message"} <= set(logs[0])
    assert any(e["message"] == "init called" and e["plugin"] == "slow-fast" for e in logs)


def test_handler_exception_is_logged_as_json(sdk_plugin_exe: Path):
    with PluginHarness.subprocess(sdk_plugin_exe) as h:
        assert h.request("GET", "/boom").status == 500
        h.shutdown()
        errors = [e for e in h.logs() if e["level"] == "error"]
    assert errors and "kaboom" in errors[0]["error"] and errors[0]["path"] == "/boom"


def test_sigterm_is_a_graceful_exit(sdk_plugin_exe: Path):
    with PluginHarness.subprocess(sdk_plugin_exe) as h:
        h.process.send_signal(signal.SIGTERM)
        assert h.process.wait(5) == 0


def test_exits_when_the_host_closes_the_kv_channel(sdk_plugin_exe: Path):
    with PluginHarness.subprocess(sdk_plugin_exe) as h:
        h.kv_double.close()  # what the plugin sees when the host process is gone
        assert h.process.wait(5) == 0


def test_exits_when_the_parent_process_dies(sdk_plugin_exe: Path, tmp_path: Path):
    """A host killed with SIGKILL: the plugin notices its parent changed and exits."""
    sock = tmp_path / "p.sock"
    pidfile = tmp_path / "pid"
    host = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        env = dict(os.environ, TORU_PLUGIN_SOCKET={str(sock)!r})
        env.pop("TORU_KV_FD", None)
        p = subprocess.Popen([{str(sdk_plugin_exe)!r}], env=env, stderr=subprocess.DEVNULL)
        open({str(pidfile)!r}, "w").write(str(p.pid))
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", host], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (sock.exists() and pidfile.exists() and pidfile.read_text()):
            assert time.monotonic() < deadline, "plugin did not start"
            time.sleep(0.02)
        child = int(pidfile.read_text())
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(child):
            assert time.monotonic() < deadline, "plugin outlived its host"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_socket_is_private_and_a_stale_one_is_replaced(tmp_path: Path, sdk_plugin_exe: Path):
    path = tmp_path / "p.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # a socket file left by a crashed predecessor
    env = dict(os.environ, TORU_PLUGIN_SOCKET=str(path))
    env.pop("TORU_KV_FD", None)
    proc = subprocess.Popen(
        [sdk_plugin_exe], env=env, start_new_session=True, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                c = socket.socket(socket.AF_UNIX)
                c.connect(str(path))
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.02)
        assert os.stat(path).st_mode & 0o777 == 0o600
        c.sendall(encode({"type": "lifecycle", "payload": {"action": "shutdown"}}))
        assert _wait_exit(proc) == 0
        c.close()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_pipelined_inline_replies_arrive_together():
    with PluginHarness.in_process(SlowFast()) as h:
        probe = {"X-Toru-Probe": "1"}
        sock = h.connect()
        sock.sendall(
            b"".join(
                encode(http_request_message(f"p{i}", HttpRequest("GET", "/health", probe)))
                for i in range(5)
            )
            + encode(http_request_message("b", HttpRequest("GET", "/bundle.js")))
        )
        reader = Channel(sock)
        assert {reader.read(timing.WAIT)["request_id"] for _ in range(6)} == {
            "p0",
            "p1",
            "p2",
            "p3",
            "p4",
            "b",
        }
        sock.close()


class Mixed(ToruPlugin):
    """Plain ``def`` handlers (called inline) next to coroutine ones (a Task each)."""

    metadata = {"id": "mixed", "name": "Mixed", "version": "1.0.0", "route": "/mixed"}

    def __init__(self) -> None:
        super().__init__()
        self.tasks_seen: list[bool] = []

    @route("GET", "/sync/{n}")
    def sync(self, req: HttpRequest) -> dict:
        import asyncio

        self.tasks_seen.append(asyncio.current_task() is not None)
        return {"n": int(req.params["n"])}

    @route("GET", "/sync-error")
    def sync_error(self, req: HttpRequest) -> dict:
        raise PluginError("nope", 409, "conflict")

    @route("GET", "/sync-crash")
    def sync_crash(self, req: HttpRequest) -> dict:
        raise RuntimeError("secret detail")

    @route("GET", "/sync-bad")
    def sync_bad(self, req: HttpRequest) -> object:
        return object()  # not a response type

    @route("GET", "/wrapped")
    def wrapped(self, req: HttpRequest):  # a plain def that hands back a coroutine
        return self._later()

    async def _later(self) -> dict:
        import asyncio

        await asyncio.sleep(0.01)
        return {"later": True}

    @route("GET", "/async")
    async def coro(self, req: HttpRequest) -> dict:
        import asyncio

        async with asyncio.timeout(1):  # needs a current task: coroutines still get one
            await asyncio.sleep(0)
        return {"async": True}


def test_sync_handlers_run_inline_and_keep_every_answer_shape():
    plugin = Mixed()
    with PluginHarness.in_process(plugin) as h:
        assert h.request("GET", "/sync/7").json() == {"n": 7}  # may wait for init in a Task
        assert h.request("GET", "/sync/8").json() == {"n": 8}
        assert plugin.tasks_seen[-1] is False  # once initialised: inline, no Task per request
        r = h.request("GET", "/sync-error")
        assert (r.status, r.json()["error"]) == (409, "conflict")
        r = h.request("GET", "/sync-crash")
        assert r.status == 500 and "secret" not in r.text
        assert h.request("GET", "/sync-bad").status == 500
        assert h.request("GET", "/wrapped").json() == {"later": True}
        assert h.request("GET", "/async").json() == {"async": True}
        assert h.request("HEAD", "/sync/3").body == b""
        assert h.request("GET", "/nowhere").status == 404
        r = h.request("POST", "/sync/1")
        assert r.status == 405 and r.header("Allow") == "GET"


def test_sync_handlers_pipelined_answer_every_request():
    with PluginHarness.in_process(Mixed()) as h:
        sock = h.connect()
        paths = [f"/sync/{i}" if i % 3 else "/async" for i in range(30)]
        sock.sendall(
            b"".join(
                encode(http_request_message(f"q{i}", HttpRequest("GET", p)))
                for i, p in enumerate(paths)
            )
        )
        reader = Channel(sock)
        got = {
            m["request_id"]: m["payload"]["status"]
            for m in (reader.read(timing.WAIT) for _ in paths)
        }
        assert got == {f"q{i}": 200 for i in range(30)}
        sock.close()


def test_sync_handler_before_init_waits_for_init():
    with PluginHarness.in_process(Mixed(), init=False) as h:
        assert h.request("GET", "/sync/5").json() == {"n": 5}


def test_overridden_handle_http_still_gets_every_request():
    class Own(Mixed):
        metadata = {"id": "own", "name": "Own", "version": "1.0.0", "route": "/own"}

        async def handle_http(self, req: HttpRequest):
            resp = await super().handle_http(req)
            resp.headers["X-Own"] = "1"
            return resp

    with PluginHarness.in_process(Own()) as h:
        r = h.request("GET", "/sync/2")
        assert r.json() == {"n": 2} and r.header("X-Own") == "1"
