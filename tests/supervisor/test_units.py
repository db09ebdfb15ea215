"""Fast unit tests: the state machine with fake OS seams, restart policy, logs, state file, store.

Async tests run under uvloop and fail on any unhandled loop exception.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from toru.errors import GatewayTimeout, NotFound
from toru.store import Store
from toru.supervisor.discovery import Discovered, resolve_conflicts
from toru.supervisor.instance import UpgradeFailed
from toru.supervisor.launcher import LaunchCallbacks, Launched, LaunchError, LaunchSpec
from toru.supervisor.logs import (
    LogWriter,
    StderrLevels,
    SupervisorLog,
    plugin_line_entry,
    read_logs,
)
from toru.supervisor.plugin_state_file import load_state, save_state, set_enabled
from toru.supervisor.restart_policy import RestartPolicy
from toru.supervisor.states import TRANSITIONS, IllegalTransition, PluginState, check_transition
from toru.supervisor.supervised import Deps, SupervisedPlugin
from toru_plugin_api.messages import PluginMetadata

from .. import timing
from ..loops import run_async

S = PluginState


# ----------------------------------------------------------------------------- fakes


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.exited: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.signals: list[int] = []

    def exit(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    def signal_group(self, sig: int) -> None:
        self.signals.append(sig)
        self.exit(-sig)

    async def wait(self, timeout: float | None = None) -> int | None:
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except TimeoutError:
            return None

    async def terminate(self, grace: float) -> int:
        self.signal_group(15)
        return await self.exited


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.requests: list[tuple[str, dict[str, Any], float, Any]] = []
        self.closed = False
        self.stalled: float | None = None  # idle; tests set "busy" values
        self.pending: dict[str, Any] = {}  # an upgrade's old instance waits for it to empty

    def send(self, msg: dict[str, Any]) -> None:
        self.sent.append(msg)

    def request(self, type_: str, payload: dict[str, Any], timeout: float, cb: Any) -> str:
        self.requests.append((type_, payload, timeout, cb))
        return str(len(self.requests))

    def close(self, reason: str = "") -> None:
        self.closed = True

    def stalled_for(self, exclude: str = "") -> float | None:
        return self.stalled

    def forget_owed(self) -> None:
        pass


class FakeLauncher:
    """Each launch pops a script entry: 'ok' -> running process, or an error message."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.launched: list[Launched] = []
        self.specs: list[LaunchSpec] = []
        self.callbacks: list[LaunchCallbacks] = []

    async def launch(self, spec: LaunchSpec, callbacks: LaunchCallbacks) -> Launched:
        await asyncio.sleep(0)
        self.specs.append(spec)
        self.callbacks.append(callbacks)
        step = self.script.pop(0) if self.script else "ok"
        if step != "ok":
            raise LaunchError(step, {"phase": "starting"})
        launched = Launched(FakeProcess(1000 + len(self.launched)), FakeConnection())
        self.launched.append(launched)
        return launched


class FakeStore:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, dict[str, Any]]] = []

    def add_event(self, plugin_id: str, event: str, details: dict[str, Any]) -> int:
        self.events.append((plugin_id, event, details))
        return len(self.events)

    def kinds(self) -> list[str]:
        return [e[1] for e in self.events]


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def make_plugin(tmp_path: Path, script: list[str], max_failures: int = 3, clock: Any = None):
    store = FakeStore()
    persisted: list[tuple[str, bool, str | None]] = []
    launcher = FakeLauncher(script)
    deps = Deps(
        launcher=launcher,
        store=store,
        log=SupervisorLog(LogWriter(tmp_path / "sup.log"), echo=False),
        policy=RestartPolicy((0.001, 0.002), max_failures),
        log_dir=tmp_path,
        shutdown_grace=0.05,
        health_timeout=0.05,
        persist_enabled=lambda pid, on, why: persisted.append((pid, on, why)),
        clock=clock or time.monotonic,
    )
    meta = PluginMetadata(id="p", name="P", version="1", route="/p")
    plugin = SupervisedPlugin(Discovered(tmp_path / "p.binary", (0, 0), meta), deps)
    return plugin, launcher, store, persisted


async def until(pred: Any, timeout: float = 5.0) -> None:
    """Poll ``pred`` in the loop; AssertionError after ``timeout`` (scaled, tests/timing.py)."""
    deadline = time.monotonic() + timing.scaled(timeout)
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


# ----------------------------------------------------------------------------- states


def test_transition_table_is_closed_and_enforced():
    for old, news in TRANSITIONS.items():
        for new in news:
            check_transition(old, new)
    with pytest.raises(IllegalTransition):
        check_transition(S.STOPPED, S.RUNNING)
    with pytest.raises(IllegalTransition):
        check_transition(S.INVALID, S.STARTING)
    reachable = {s for news in TRANSITIONS.values() for s in news}
    assert reachable == set(PluginState)


def test_restart_policy_backoff_cap_give_up_and_reset():
    p = RestartPolicy()
    assert [p.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 16, 16]
    assert not p.gives_up(9) and p.gives_up(10)
    assert p.failures_after_crash(4, uptime=10) == 5
    assert p.failures_after_crash(9, uptime=60) == 1


def test_state_machine_crash_backoff_restart_then_disable(tmp_path):
    async def scenario():
        plugin, launcher, store, persisted = make_plugin(tmp_path, ["ok", "boom", "boom"])
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        launcher.launched[0].process.exit(3)  # crash while running
        await until(lambda: plugin.state is S.FAILED)
        return plugin, launcher, store, persisted

    plugin, _launcher, store, persisted = run_async(scenario())
    assert store.kinds() == ["started", "crashed", "crashed", "crashed", "disabled"]
    assert store.events[1][2]["exit_code"] == 3
    assert store.events[2][2]["reason"] == "boom"
    assert persisted == [("p", False, "disabled after 3 consecutive failures")]
    assert plugin.enabled is False and plugin.failures == 3


def test_failure_count_resets_after_60s_up(tmp_path):
    clock = Clock()

    async def scenario():
        plugin, launcher, store, _ = make_plugin(tmp_path, ["ok"] * 5, clock=clock)
        plugin.enable()
        for i in range(2):
            await until(lambda i=i: plugin.state is S.RUNNING and len(launcher.launched) == i + 1)
            launcher.launched[i].process.exit(1)
        await until(lambda: plugin.state is S.RUNNING and len(launcher.launched) == 3)
        assert plugin.failures == 2
        clock.offset += 61  # stayed up a minute
        launcher.launched[2].process.exit(1)
        await until(lambda: len(launcher.launched) == 4 and plugin.state is S.RUNNING)
        failures = plugin.failures
        await plugin.disable()
        return failures, plugin, store

    failures, plugin, store = run_async(scenario())
    assert failures == 1
    assert plugin.state is S.STOPPED and plugin.restarts == 3
    assert store.kinds()[-1] == "stopped"


def test_disable_during_backoff_stops_without_restart(tmp_path):
    async def scenario():
        plugin, launcher, _store, _ = make_plugin(tmp_path, ["boom"])
        plugin.deps.policy = RestartPolicy((30.0,), 10)
        plugin.enable()
        await until(lambda: plugin.state is S.BACKOFF)
        assert plugin.retry_after() >= 29
        await plugin.disable()
        return plugin, launcher

    plugin, launcher = run_async(scenario())
    assert plugin.state is S.STOPPED and launcher.launched == []


def test_disable_sends_shutdown_then_kills(tmp_path):
    async def scenario():
        plugin, launcher, _store, _ = make_plugin(tmp_path, ["ok"])
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        await plugin.disable()
        await plugin.disable()  # idempotent
        return plugin, launcher.launched[0]

    plugin, launched = run_async(scenario())
    assert launched.connection.sent[0]["payload"] == {"action": "shutdown"}
    assert launched.process.signals == [15]  # ignored shutdown -> SIGTERM after grace/2
    assert plugin.state is S.STOPPED and plugin.launched is None


def test_unanswered_health_probe_kills_and_restarts(tmp_path):
    async def scenario():
        plugin, launcher, store, _ = make_plugin(tmp_path, ["ok", "ok"])
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        plugin.check_health(time.monotonic())
        plugin.check_health(time.monotonic())  # one probe at a time
        conn = launcher.launched[0].connection
        assert len(conn.requests) == 1
        type_, payload, _, cb = conn.requests[0]
        assert type_ == "http"
        assert payload["payload"]["path"] == "/health"
        assert payload["payload"]["headers"] == {"X-Toru-Probe": "1"}
        cb(None, GatewayTimeout("no answer"))
        await until(lambda: len(launcher.launched) == 2 and plugin.state is S.RUNNING)
        await plugin.disable()
        return launcher, store

    launcher, store = run_async(scenario())
    assert launcher.launched[0].process.signals == [9]
    kinds = store.kinds()
    assert kinds[:4] == ["started", "unhealthy", "crashed", "restarted"]


def test_busy_plugin_is_judged_by_progress_not_by_a_probe(tmp_path):
    async def scenario():
        plugin, launcher, store, _ = make_plugin(tmp_path, ["ok", "ok"])
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        conn = launcher.launched[0].connection
        conn.stalled = 0.0  # busy, inside every deadline: no probe, no verdict
        plugin.check_health(time.monotonic())
        assert conn.requests == []
        conn.stalled = plugin.deps.health_timeout / 2  # past a deadline, not for long
        plugin.check_health(time.monotonic())
        assert len(conn.requests) == 1  # a chance to show progress...
        conn.requests[0][3](None, GatewayTimeout("queued behind the work"))
        await asyncio.sleep(0.01)
        assert plugin.state is S.RUNNING and "unhealthy" not in store.kinds()  # ...not a verdict
        conn.stalled = plugin.deps.health_timeout  # silent for health_timeout: hung
        plugin.check_health(time.monotonic())
        await until(lambda: len(launcher.launched) == 2 and plugin.state is S.RUNNING)
        await plugin.disable()
        return launcher, store

    launcher, store = run_async(scenario())
    assert launcher.launched[0].process.signals == [9]
    assert store.kinds()[:3] == ["started", "unhealthy", "crashed"]


# ----------------------------------------------------------------------------- discovery


def test_resolve_conflicts_first_claim_wins(tmp_path):
    def d(name: str, pid: str, route: str) -> Discovered:
        meta = PluginMetadata(id=pid, name=pid, version="1", route=route)
        return Discovered(tmp_path / name, (0, 0), meta)

    found = [d("a.binary", "x", "/x"), d("b.binary", "x", "/y"), d("c.binary", "z", "/x")]
    resolve_conflicts(found, {}, {})
    assert found[0].metadata is not None
    assert found[1].metadata is None and "duplicate plugin id 'x'" in found[1].error
    assert found[2].metadata is None and "duplicate route '/x'" in found[2].error


# ----------------------------------------------------------------------------- logs


def test_log_writer_rotates_and_reader_pages_across_files(tmp_path):
    path = tmp_path / "x.log"
    w = LogWriter(path, max_bytes=2000, backups=2)
    for i in range(100):
        w.write({"timestamp": "t", "level": "error" if i % 10 == 0 else "info", "message": f"m{i}"})
    w.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["x.log", "x.log.1", "x.log.2"]
    assert all((tmp_path / f).stat().st_size <= 2000 for f in files)
    page = read_logs(path, 2, page=0, page_size=5)
    assert [e["message"] for e in page["entries"]] == ["m99", "m98", "m97", "m96", "m95"]
    assert page["has_more"]
    everything = read_logs(path, 2, page=0, page_size=1000)
    msgs = [e["message"] for e in everything["entries"]]
    assert msgs == sorted(msgs, key=lambda m: -int(m[1:])) and not everything["has_more"]
    errors = read_logs(path, 2, level="error", page_size=1000)["entries"]
    assert {e["level"] for e in errors} == {"error"}
    assert len(errors) == len([m for m in msgs if int(m[1:]) % 10 == 0])


def test_plugin_line_entry_keeps_structured_and_wraps_plain():
    e = plugin_line_entry("p", b'{"level":"WARNING","message":"hi","x":1}', "stderr")
    assert e["level"] == "warn" and e["x"] == 1 and e["plugin"] == "p"
    e = plugin_line_entry("p", b"plain text\n", "stderr")
    assert e["level"] == "warn" and e["message"] == "plain text"
    e = plugin_line_entry("p", b"\xff\xfe bytes", "stdout")
    assert e["level"] == "info" and "bytes" in e["message"]


@pytest.mark.parametrize(
    ("lines", "levels"),
    [
        (  # Python: the whole traceback, then back to warn
            [
                b"chatty",
                b"Traceback (most recent call last):",
                b'  File "x.py", line 3',
                b"    main()",
                b"ValueError: bad",
                b"after",
            ],
            ["warn", "error", "error", "error", "error", "warn"],
        ),
        (  # Node: the Error line and its stack
            [b"Error: ENOENT: no such file", b"    at Object.openSync (node:fs:596:3)", b"done"],
            ["error", "error", "warn"],
        ),
        (  # Rust and Go panics, fatal/ERROR prefixes; a warning stays a warning
            [
                b"thread 'main' panicked at src/main.rs:3:5:",
                b"panic: runtime error",
                b"fatal error: all goroutines are asleep",
                b"ERROR: it broke",
                b"DeprecationWarning: old",
                b"WARNING: disk at 91%",
            ],
            ["error", "error", "error", "error", "warn", "warn"],
        ),
    ],
)
def test_stderr_crash_output_is_error(lines, levels):
    classify = StderrLevels()
    got = [plugin_line_entry("p", line, "stderr", classify)["level"] for line in lines]
    assert got == levels
    assert plugin_line_entry("p", b"Error: on stdout", "stdout", classify)["level"] == "info"


# ----------------------------------------------------------------------------- state file


def test_state_file_atomic_roundtrip_and_original_format(tmp_path):
    path = tmp_path / ".metadata" / "config.json"
    assert load_state(path) == {}
    set_enabled(path, "a", True)
    set_enabled(path, "b", False, disabled_reason="why")
    state = load_state(path)
    assert state["a"]["enabled"] is True and state["b"]["disabled_reason"] == "why"
    assert [p.name for p in path.parent.iterdir()] == ["config.json"]  # no temp left
    path.write_text(json.dumps({"old": {"enabled": True}}))  # the original flat form
    assert load_state(path)["old"]["enabled"] is True
    path.write_text("{broken")
    assert load_state(path) == {}
    save_state(path, {"z": {"enabled": True}})
    assert json.loads(path.read_text())["version"] == 1


# ----------------------------------------------------------------------------- store


def test_store_migrate_idempotent_kv_events_prune(tmp_path):
    db = tmp_path / "t.db"
    s1, s2 = Store(db), Store(db)
    assert s1.migrate() == s2.migrate()
    assert s1.instance_id() == s2.instance_id()
    assert s1.connection().execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s1.kv_set("a", "k", "1")
    s1.kv_set("a", "k", "2")
    s1.kv_set("a", "k%", "x")
    s1.kv_set("b", "k", "other")
    assert s2.kv_get("a", "k") == "2" and s2.kv_get("b", "k") == "other"
    assert s2.kv_list("a", "k%") == ["k%"]  # prefix is literal, not LIKE
    assert s2.kv_delete("a", "k") and not s2.kv_delete("a", "k")
    s1.add_event("a", "started", {"pid": 1})
    old = time.time() - 8 * 24 * 3600
    s1.connection().execute(
        "INSERT INTO plugin_events(plugin_id, event_type, details, created_at) "
        "VALUES ('a', 'crashed', '{}', ?)",
        (time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(old)),),
    )
    assert s1.prune_events() == 1
    assert [e["event_type"] for e in s2.events("a")] == ["started"]
    tables = {r[0] for r in s1.connection().execute("SELECT name FROM sqlite_master")}
    assert {"users", "sessions", "api_tokens", "login_failures", "settings"} <= tables


# ----------------------------------------------------------------------------- client


def test_client_for_thread_and_bounded_wait_on_a_silent_supervisor(short_home):
    import socket
    import threading

    from toru.errors import SupervisorUnavailable
    from toru.supervisor.client import ControlClient

    path = short_home / "s.sock"
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(str(path))
    srv.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(srv.accept()), daemon=True).start()
    try:
        a, b = ControlClient.for_thread(path), ControlClient.for_thread(path)
        assert a is b
        other: list[ControlClient] = []
        t = threading.Thread(target=lambda: other.append(ControlClient.for_thread(path)))
        t.start()
        t.join()
        assert other[0] is not a
        t0 = time.monotonic()
        with pytest.raises(SupervisorUnavailable):
            a.call("ping", timeout=0.3)  # accepted, never answered
        assert time.monotonic() - t0 < 5
        a.close()
    finally:
        srv.close()
        for conn, _ in accepted:
            conn.close()


# ----------------------------------------------------------------------------- connection


def test_plugin_connection_deadlines_late_answers_and_loss_over_a_socketpair():
    import socket

    from toru.errors import BadGateway
    from toru.supervisor.connection import PluginConnection
    from toru_plugin_api.codec import Decoder, encode

    async def scenario() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        host, plugin = socket.socketpair()
        plugin.setblocking(False)
        lost: list[str] = []
        timeouts: list[str] = []
        _, conn = await loop.create_unix_connection(
            lambda: PluginConnection("p", 1024, on_lost=lost.append, on_timeout=timeouts.append),
            sock=host,
        )
        results: dict[str, Any] = {}

        def keep(name: str):
            return lambda reply, err: results.__setitem__(name, err or reply)

        conn.request("http", {"payload": {}}, 30, keep("slow"))  # arms the timer at +30 s
        conn.request("http", {"payload": {}}, 0.05, keep("fast"))  # re-arms earlier
        conn.request("http", {"payload": {}}, 0.1, keep("mid"))
        conn.request("http", {"payload": {}}, 30, keep("answered"))
        dec, got = Decoder(), []
        while len(got) < 4:
            got += dec.feed(await loop.sock_recv(plugin, 65536))
        ids = [m["request_id"] for m in got]
        reply = {"type": "http", "request_id": ids[3], "payload": {"status": 200}}
        await loop.sock_sendall(plugin, encode(reply))
        await until(lambda: len(results) == 3)
        late = {"type": "http", "request_id": ids[1], "payload": {"status": 200}}  # dropped
        await loop.sock_sendall(plugin, encode(late) + b"\xff\xff\xff\xff")  # then 4 GB
        await until(lambda: "slow" in results)
        plugin.close()
        return {"results": results, "lost": lost, "timeouts": timeouts, "ids": ids}

    out = run_async(scenario())
    r = out["results"]
    assert isinstance(r["fast"], GatewayTimeout) and isinstance(r["mid"], GatewayTimeout)
    assert r["answered"] == {"status": 200}
    assert isinstance(r["slow"], BadGateway) and "maximum frame size" in r["slow"].message
    assert out["timeouts"] == [out["ids"][1], out["ids"][2]]
    assert out["lost"] and out["lost"][0].startswith("protocol error")


def test_plugin_connection_keeps_timed_out_requests_owed_until_their_late_answer():
    """The progress bookkeeping behind "busy is not hung" (connection.stalled_for)."""
    import socket

    from toru.supervisor.connection import PluginConnection
    from toru_plugin_api.codec import Decoder, encode

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        host, plugin = socket.socketpair()
        plugin.setblocking(False)
        _, conn = await loop.create_unix_connection(lambda: PluginConnection("p", 1024), sock=host)
        seen: list[Any] = [conn.stalled_for()]  # idle
        errors: list[Any] = []
        conn.request("http", {"payload": {}}, timing.HTTP, lambda r, e: None)
        seen.append(conn.stalled_for())  # busy, inside its deadline
        probe = conn.request("http", {"payload": {}}, timing.HTTP, lambda r, e: None)
        conn.request("http", {"payload": {}}, 0.05, lambda r, e: errors.append(e))
        await until(lambda: errors)  # 504 sent; still owed
        await asyncio.sleep(0.02)  # the sweep may fire a hair before the deadline
        first = conn.stalled_for()
        assert first is not None and first > 0 and len(conn.owed) == 1
        dec, got = Decoder(), []
        while len(got) < 3:
            got += dec.feed(await loop.sock_recv(plugin, 65536))
        late = {"type": "http", "request_id": got[2]["request_id"], "payload": {"status": 200}}
        await loop.sock_sendall(plugin, encode(late))
        await until(lambda: not conn.owed)  # the late answer is progress
        seen.append(conn.stalled_for())  # back inside the other deadlines
        seen.append(conn.stalled_for(exclude=probe) is not None)  # the first one still busy
        conn.close()
        plugin.close()
        return seen

    assert run_async(scenario()) == [None, 0.0, 0.0, True]


def test_store_migrates_a_schema_1_database_keeping_its_rows(tmp_path):
    """An installation made before the auth generation (schema 2) upgrades in place."""
    from toru import store as store_mod

    db = tmp_path / "old.db"
    conn = apsw.Connection(str(db))
    conn.execute(store_mod._MIGRATIONS[0])
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (1)")
    conn.execute(
        "INSERT INTO users VALUES ('ann', 'x', 'admin', '2026-01-01T00:00:00.000Z');"
        "INSERT INTO plugin_kv VALUES ('p', 'k', 'v', 0)"
    )
    conn.close()
    s = Store(db)
    assert s.migrate() == store_mod.SCHEMA_VERSION >= 2
    assert s.kv_get("p", "k") == "v"
    before = s.auth_generation()
    s.connection().execute("UPDATE users SET role = 'user' WHERE username = 'ann'")
    assert s.auth_generation() == before + 1
    s.kv_set("p", "k", "w")  # not an auth change
    assert s.auth_generation() == before + 1


def test_serve_children_use_the_plugins_restart_policy(monkeypatch):
    from toru import serve

    child = serve.Child("x", ["true"], {})
    clock = [100.0]
    monkeypatch.setattr(serve.time, "monotonic", lambda: clock[0])
    child.started_at = clock[0]
    delays = [child.note_exit() for _ in range(3)]
    assert delays == [0.2, 0.5, 1.0] and child.failures == 3
    clock[0] += serve.CHILD_POLICY.reset_after  # up long enough: counts from one again
    assert child.note_exit() == 0.2 and child.failures == 1
    child.failures = serve.CHILD_POLICY.max_failures
    assert serve.CHILD_POLICY.gives_up(child.failures)


def test_stopping_is_a_state_and_disable_passes_through_it(tmp_path):
    async def scenario():
        plugin, launcher, _store, _ = make_plugin(tmp_path, ["ok"])
        seen: list[PluginState] = []
        set_state = plugin._set_state

        def recording(new, *args, **kwargs):
            set_state(new, *args, **kwargs)
            if not seen or seen[-1] is not new:
                seen.append(new)

        plugin._set_state = recording
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        assert plugin.admission() is launcher.launched[0].connection
        stop = asyncio.ensure_future(plugin.disable())
        await until(lambda: plugin.state is S.STOPPING)
        with pytest.raises(NotFound):
            plugin.admission()
        await stop
        return plugin, seen

    plugin, seen = run_async(scenario())
    assert seen[-2:] == [S.STOPPING, S.STOPPED] and plugin.state is S.STOPPED
    assert S.STOPPING not in TRANSITIONS[S.STOPPED] and TRANSITIONS[S.STOPPING] == {S.STOPPED}


def test_supervisor_state_remembers_metadata_per_signature_and_failures(tmp_path):
    from toru.supervisor.supervisor_state import SupervisorState

    path = tmp_path / "var" / "supervisor-state.json"
    meta = PluginMetadata(id="p", name="P", version="1", route="/p")
    binary = tmp_path / "p.binary"
    st = SupervisorState(path)
    st.remember_metadata(binary, (1, 2), meta)
    st.set_failures("p", 3)
    again = SupervisorState(path)
    assert again.known_metadata(binary, (1, 2)) == meta
    assert again.known_metadata(binary, (1, 3)) is None  # the file changed: probe it again
    assert again.failures == {"p": 3}
    again.set_failures("p", 0)
    again.forget_binaries(set())
    final = SupervisorState(path)
    assert final.failures == {} and final.known_metadata(binary, (1, 2)) is None
    path.write_text("{not json")
    broken = SupervisorState(path)  # an unreadable file is an empty memory, not a crash
    assert broken.load_error and broken.failures == {} and broken.metadata == {}


# ----------------------------------------------------------------------------- upgrade


def _answer_probe(launched: Launched) -> None:
    """Answer the upgrade's health probe on a fake connection."""
    _type, payload, _timeout, cb = launched.connection.requests[-1]
    assert payload["payload"]["headers"] == {"X-Toru-Probe": "1"}
    cb({"status": 200}, None)


def test_upgrade_switches_retires_the_old_and_watches_the_new(tmp_path):
    async def scenario():
        plugin, launcher, store, _ = make_plugin(tmp_path, [])
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        old = launcher.launched[0]
        meta = PluginMetadata(id="p", name="P", version="2", route="/p")
        upgrading = asyncio.ensure_future(
            plugin.upgrade(Discovered(tmp_path / "p.binary", (1, 1), meta))
        )
        await until(
            lambda: len(launcher.launched) == 2 and launcher.launched[1].connection.requests
        )
        new = launcher.launched[1]
        assert plugin.launched is old  # not before the probe is answered
        _answer_probe(new)
        details = await upgrading
        assert plugin.launched is new and plugin.admission() is new.connection
        assert launcher.specs[1].instance == 1 and plugin.metadata.version == "2"
        await until(lambda: old.process.exited.done())  # retired: shutdown, then SIGTERM
        assert old.connection.sent[-1]["payload"]["action"] == "shutdown"
        await asyncio.sleep(0.01)
        assert plugin.state is S.RUNNING and store.kinds() == ["started"]
        new.process.exit(3)  # the lifecycle now watches the new process
        await until(lambda: "crashed" in store.kinds())
        await plugin.disable()
        return details

    details = run_async(scenario())
    assert details == {"old_pid": 1000, "new_pid": 1001, "version": "2"}


def test_failed_upgrade_leaves_the_old_instance_serving(tmp_path):
    async def scenario():
        plugin, launcher, store, _ = make_plugin(tmp_path, ["ok", "boom"])
        plugin.enable()
        await until(lambda: plugin.state is S.RUNNING)
        old = launcher.launched[0]
        found = Discovered(tmp_path / "p.binary", (1, 1), plugin.metadata)
        with pytest.raises(UpgradeFailed, match="failed to start: boom"):
            await plugin.upgrade(found)
        # started, then its connection breaks before it answered: the upgrade fails, and the
        # loss is not taken for the old instance's
        upgrading = asyncio.ensure_future(plugin.upgrade(found))
        await until(
            lambda: len(launcher.launched) == 2 and launcher.launched[1].connection.requests
        )
        launcher.callbacks[-1].on_connection_lost("connection closed by the plugin")
        with pytest.raises(UpgradeFailed, match="closed its connection"):
            await upgrading
        new = launcher.launched[1]
        assert new.process.exited.done() and new.connection.closed  # stopped
        await asyncio.sleep(0.01)
        assert plugin.launched is old and not old.process.exited.done()
        assert plugin.state is S.RUNNING and store.kinds() == ["started"]
        await plugin.disable()

    run_async(scenario())
