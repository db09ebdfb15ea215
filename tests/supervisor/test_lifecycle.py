"""Integration: a real ``toru supervisor`` with real plugin processes (seed T1-T4, T12-T15)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from toru.errors import BadGateway, Conflict, NotFound, Unavailable
from toru.supervisor.client import ControlClient

from .. import timing
from .helpers import (
    SupervisorProc,
    enable_on_disk,
    make_plugin,
    pid_alive,
    wait_for,
)


def test_t1_t12_enabled_plugin_spawns_in_own_group_and_answers(home):
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        info = sup.info("alpha")
        assert info["state"] == "stopped" and info["enabled"] is False  # new = disabled
        with pytest.raises(NotFound):
            sup.client.http("/alpha", "GET", "/echo")
        info = sup.call("enable", {"plugin": "alpha"})
        assert info["state"] == "running" and info["enabled"] is True
        pid = info["pid"]
        resp = sup.client.http("/alpha", "POST", "/echo?q=1", {"X-Test": "yes"}, b"body!")
        assert resp.status == 200
        echoed = json.loads(resp.body)
        assert echoed["path"] == "/echo?q=1" and echoed["method"] == "POST"
        assert echoed["headers"]["X-Test"] == "yes" and echoed["body"] == "body!"
        got = json.loads(sup.client.http("alpha", "GET", "/pid").body)
        assert got["pid"] == pid and got["pgid"] == pid  # its own process group
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        names = {e.split(b"=", 1)[0]: e.split(b"=", 1)[1] for e in env if b"=" in e}
        assert names[b"TORU_PLUGIN_ID"] == b"alpha"
        assert names[b"TORU_PLUGIN_SOCKET"].endswith(b"run/p/alpha/plugin.sock")
        assert names[b"TORU_INSTANCE_ID"] == sup.call("hello")["instance_id"].encode()
        assert b"TORU_KV_FD" in names
        assert b"TORU_ADMIN_PASSWORD" not in names
        events = [e["event_type"] for e in sup.call("events", {"plugin": "alpha"})]
        assert events[:2] == ["started", "enabled"]
    assert not pid_alive(pid)


def test_t2_t4_invalid_plugins_are_recorded_and_others_load(home):
    plugins = home / "plugins"
    make_plugin(plugins, "good")
    make_plugin(plugins, "badmeta", mode="bad-metadata")
    make_plugin(plugins, "failmeta", mode="metadata-fail")
    make_plugin(plugins, "slowmeta", mode="metadata-timeout")
    (plugins / "garbage.binary").write_bytes(b"\x7fELF not really")
    (plugins / "garbage.binary").chmod(0o755)
    (plugins / "noexec.binary").write_text("#!/bin/sh\necho hi\n")
    enable_on_disk(home, "good")
    # 2 s (scaled) fires for metadata-timeout (an hour); a good plugin that is slower than
    # that on a loaded box is only retried (it is not invalid any more), so it cannot fail.
    env = {"TORU_METADATA_TIMEOUT": str(timing.scaled(2))}
    sup = SupervisorProc(home, env=env).start(settle=False)
    try:
        states = wait_for(
            lambda: (
                (s := {p["id"]: p for p in sup.call("list")})["good"]["state"] == "running"
                and all(s[i]["error"] for i in ("failmeta", "slowmeta"))
                and s
            ),
            60,
        )
        # Definite bad answers are invalid; no answer (crash, timeout) is retried instead.
        for pid in ("badmeta", "garbage", "noexec"):
            assert states[pid]["state"] == "invalid", pid
            assert states[pid]["error"], pid
        for pid in ("failmeta", "slowmeta"):
            assert states[pid]["state"] == "discovering", pid
            assert "retrying in" in states[pid]["error"], pid
        assert "id must match" in states["badmeta"]["error"]
        assert "exit_code 2" in states["failmeta"]["error"]
        assert "cannot describe myself" in states["failmeta"]["error"]
        assert "did not finish" in states["slowmeta"]["error"]
        assert "TORU_METADATA_TIMEOUT" in states["slowmeta"]["error"]
        assert "not executable" in states["noexec"]["error"]
        with pytest.raises(Conflict):
            sup.call("enable", {"plugin": "badmeta"})
        invalid = {e["plugin_id"] for e in sup.call("events", {}) if e["event_type"] == "invalid"}
        assert invalid == {"badmeta", "garbage", "noexec"}
        log = (home / "var" / "log" / "plugin-supervisor.log").read_text()
        assert "invalid plugin badmeta.binary" in log
        assert sup.client.http("/good", "GET", "/health").status == 200
    finally:
        sup.stop()


def test_t3_missing_plugins_directory_is_created(home):
    assert not (home / "plugins").exists()
    with SupervisorProc(home) as sup:
        assert sup.call("list") == []
        assert (home / "plugins").is_dir()
        run = home / "run"
        assert stat.S_IMODE(run.stat().st_mode) == 0o700
        assert stat.S_IMODE((run / "supervisor.sock").stat().st_mode) == 0o600


def test_duplicate_id_and_route_second_is_invalid(home):
    plugins = home / "plugins"
    make_plugin(plugins, "dup", name="a-first")
    make_plugin(plugins, "dup", name="b-second")
    make_plugin(plugins, "other", name="c-route")
    with SupervisorProc(home, env={"MISBEHAVE_ROUTE_OTHER": "/dup"}) as sup:
        states = {p["binary"]: p for p in sup.call("list")}
    assert states["a-first.binary"]["state"] == "stopped"
    assert states["b-second.binary"]["state"] == "invalid"
    assert "duplicate plugin id 'dup'" in states["b-second.binary"]["error"]
    assert "a-first.binary" in states["b-second.binary"]["error"]
    assert states["c-route.binary"]["state"] == "invalid"
    assert "duplicate route '/dup'" in states["c-route.binary"]["error"]


def test_t13_disable_kills_process_and_route_404(home):
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    with SupervisorProc(home) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        info = sup.call("disable", {"plugin": "alpha"})
        assert info["state"] == "stopped" and info["pid"] is None
        assert not pid_alive(pid)
        with pytest.raises(NotFound):
            sup.client.http("/alpha", "GET", "/echo")
        assert not (home / "run" / "p" / "alpha.sock").exists() or True
        state = json.loads((home / "plugins" / ".metadata" / "config.json").read_text())
        assert state["plugins"]["alpha"]["enabled"] is False


def test_t14_enabled_state_persists_across_restart(home):
    make_plugin(home / "plugins", "alpha")
    make_plugin(home / "plugins", "beta")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
    state = json.loads((home / "plugins" / ".metadata" / "config.json").read_text())
    assert state["plugins"]["alpha"]["enabled"] is True
    with SupervisorProc(home) as sup:
        assert sup.info("alpha")["state"] == "running"
        assert sup.info("beta")["state"] == "stopped"


def test_t15_crash_at_start_backs_off_then_fails_and_stays_disabled(home):
    make_plugin(home / "plugins", "crashy", mode="crash-start")
    enable_on_disk(home, "crashy")
    env = {"TORU_MAX_FAILURES": "3", "TORU_RESTART_BACKOFF": "0.05,0.1"}
    with SupervisorProc(home, env=env) as sup:
        info = sup.wait_state("crashy", "failed")
        assert info["enabled"] is False and info["consecutive_failures"] == 3
        assert "disabled after 3 consecutive failures" in info["error"]
        events = sup.call("events", {"plugin": "crashy"})
        kinds = [e["event_type"] for e in events]
        assert kinds.count("crashed") == 3 and kinds[0] == "disabled"
        crash = next(e for e in events if e["event_type"] == "crashed")
        assert crash["details"]["exit_code"] == 1
        assert "uptime_seconds" in crash["details"]
        assert any("crashing at start" in ln for ln in crash["details"]["stderr_tail"])
        state = json.loads((home / "plugins" / ".metadata" / "config.json").read_text())
        assert state["plugins"]["crashy"]["enabled"] is False
    with SupervisorProc(home, env=env) as sup:  # stays disabled across restarts
        assert sup.info("crashy")["state"] == "stopped"


def test_503_with_retry_after_while_in_backoff(home):
    make_plugin(home / "plugins", "crashy", mode="crash-start")
    enable_on_disk(home, "crashy")
    with SupervisorProc(home, env={"TORU_RESTART_BACKOFF": "30"}) as sup:
        sup.wait_state("crashy", "backoff")
        with pytest.raises(Unavailable) as err:
            sup.client.http("/crashy", "GET", "/echo")
        assert err.value.status == 503 and err.value.retry_after >= 1


def test_crash_mid_request_gives_502_and_restarts(home):
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    with SupervisorProc(home) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        with pytest.raises(BadGateway):
            sup.client.http("/alpha", "GET", "/crash")
        info = wait_for(
            lambda: (
                (i := sup.info("alpha"))["state"] == "running" and i["pid"] not in (None, pid) and i
            )
        )
        assert info["restarts"] == 1, json.dumps(info)
        assert sup.client.http("/alpha", "GET", "/echo").status == 200
        crash = next(e for e in info["events"] if e["event_type"] == "crashed")
        assert crash["details"]["exit_code"] == 3
        assert "about to crash mid-request" in crash["details"]["stderr_tail"]
        assert "restarted" in [e["event_type"] for e in info["events"]]


def reset_by_the_next_request(home: Path, sup: SupervisorProc, path: str) -> ControlClient:
    """Ask misbehave's ``path`` (/reset-exit, /reset-stay), which waits until the next request
    is in its socket and closes it unread: the host reads ECONNRESET. Both requests get 502.
    Returns the second request's client, still usable."""
    other = ControlClient(sup.socket, timeout=timing.WAIT, http_timeout=timing.HTTP)
    outcomes: list[BaseException] = []

    def first_request() -> None:
        try:
            sup.client.http("/alpha", "GET", path)
        except BadGateway as exc:
            outcomes.append(exc)

    first = threading.Thread(target=first_request)
    first.start()
    log = home / "var" / "log" / "plugins" / "alpha.log"
    wait_for(lambda: f"{path[1:]}: waiting" in log.read_text(), timing.WAIT)
    with pytest.raises(BadGateway):  # left unread: the plugin closes on it
        other.http("/alpha", "GET", "/echo")
    first.join(timing.WAIT)
    assert len(outcomes) == 1, outcomes
    return other


def test_a_connection_reset_just_before_the_exit_reports_the_exit(home):
    """The socket often breaks a moment before the exit is seen (a kill -9 on a busy
    machine): the crash names the exit, not "connection reset by peer"."""
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    with SupervisorProc(home) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        reset_by_the_next_request(home, sup, "/reset-exit")
        info = wait_for(lambda: (i := sup.info("alpha"))["pid"] not in (None, pid) and i)
        crash = next(e for e in info["events"] if e["event_type"] == "crashed")
        assert crash["details"]["reason"] == "exited", crash
        assert crash["details"]["exit_code"] == 4, crash


def test_a_connection_reset_by_a_plugin_that_keeps_running_gets_a_new_connection(home):
    """An original plugin that closes its connection while the next request is already on its
    way resets it (bytes unread); it still runs, so it gets a new connection, not a restart.
    Only the requests that were on the old connection fail (502); until the new connection is
    up, requests get 503 with Retry-After, never a 502."""
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    with SupervisorProc(home, env={"TORU_HEALTH_INTERVAL": "30"}) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        other = reset_by_the_next_request(home, sup, "/reset-stay")
        meanwhile: list[Exception] = []

        def answered() -> bool:
            try:
                return other.http("/alpha", "GET", "/echo").status == 200
            except (Unavailable, BadGateway) as exc:
                meanwhile.append(exc)
                return False

        wait_for(answered, timing.WAIT, interval=0.005)
        assert all(isinstance(e, Unavailable) and e.retry_after for e in meanwhile), meanwhile
        info = sup.info("alpha")
        assert (info["pid"], info["restarts"], info["state"]) == (pid, 0, "running"), info
        assert "crashed" not in [e["event_type"] for e in info["events"]], info["events"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_stops_plugins_removes_sockets_exit_0(home, sig):
    make_plugin(home / "plugins", "alpha")
    make_plugin(home / "plugins", "stubborn", mode="ignore-shutdown")
    enable_on_disk(home, "alpha", "stubborn")
    sup = SupervisorProc(home).start()
    try:
        pids = [sup.wait_state(p, "running")["pid"] for p in ("alpha", "stubborn")]
        sup.proc.send_signal(sig)
        assert sup.proc.wait(15) == 0
        for pid in pids:
            assert not pid_alive(pid)
        assert not (home / "run" / "supervisor.sock").exists()
        assert list((home / "run" / "p").iterdir()) == []  # each plugin's directory too
        events = [e["event_type"] for e in _events_offline(home, "stubborn")]
        assert events[0] == "stopped"
    finally:
        sup.stop()


def _events_offline(home, plugin):
    from toru.store import Store

    return Store(home / "var" / "toru.db").events(plugin)


def test_ignore_shutdown_is_sigkilled_after_grace(home):
    make_plugin(home / "plugins", "stubborn", mode="ignore-shutdown")
    enable_on_disk(home, "stubborn")
    with SupervisorProc(home, env={"TORU_SHUTDOWN_GRACE": "0.4"}) as sup:
        pid = sup.wait_state("stubborn", "running")["pid"]
        info = sup.call("disable", {"plugin": "stubborn"})
        assert info["state"] == "stopped"
        assert not pid_alive(pid)


def test_grandchild_is_gone_after_stop(home):
    make_plugin(home / "plugins", "forker")
    enable_on_disk(home, "forker")
    with SupervisorProc(home) as sup:
        sup.wait_state("forker", "running")
        child = json.loads(sup.client.http("/forker", "GET", "/fork").body)["grandchild"]
        assert pid_alive(child)
        sup.call("disable", {"plugin": "forker"})
        wait_for(lambda: not pid_alive(child), 5)


def test_kill9_of_supervisor_leaves_no_plugin_alive(home):
    for pid in ("p1", "p2", "p3"):
        make_plugin(home / "plugins", pid)
    make_plugin(home / "plugins", "stubborn", mode="ignore-shutdown")
    enable_on_disk(home, "p1", "p2", "p3", "stubborn")
    sup = SupervisorProc(home).start()
    try:
        pids = [sup.wait_state(p, "running")["pid"] for p in ("p1", "p2", "p3", "stubborn")]
        assert all(pid_alive(p) for p in pids)
        sup.kill9()
        wait_for(lambda: not any(pid_alive(p) for p in pids), 5)
    finally:
        sup.stop()


def test_rescan_notices_new_changed_and_removed_binaries(home):
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        assert [p["id"] for p in sup.call("list")] == ["alpha"]
        make_plugin(home / "plugins", "beta")
        wait_for(lambda: "beta" in {p["id"] for p in sup.call("list")}, 5)  # periodic check
        (home / "plugins" / "alpha.binary").unlink()
        result = sup.call("rescan")
        assert result["removed"] == ["alpha"] and result["total"] == 1
        with pytest.raises(NotFound):
            sup.info("alpha")
        make_plugin(home / "plugins", "gamma")
        assert sup.call("rescan")["added"] == ["gamma"]


def test_replaced_binary_is_restarted_and_second_supervisor_refused(home):
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    # an unapproved replacement is held back (test_pins.py); this one is about the restart
    with SupervisorProc(home, env={"TORU_PIN_BINARIES": "false"}) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        second = subprocess.run(
            [sys.executable, "-m", "toru.cli", "supervisor", "--home", str(home)],
            env=sup.env,
            capture_output=True,
            text=True,
            timeout=timing.WAIT,
        )
        assert second.returncode == 1 and "already runs" in second.stderr
        assert sup.call("ping")["ok"] is True
        binary = home / "plugins" / "alpha.binary"
        binary.write_text(binary.read_text() + "# v2\n")  # an upgrade in place
        sup.call("rescan")  # returns once the new process serves (an upgrade, test_upgrade.py)
        info = sup.wait_state("alpha", "running")
        assert info["pid"] != pid and info["enabled"] is True
        wait_for(lambda: not pid_alive(pid))  # the old one is retired in the background


def test_valid_plugin_wins_an_id_an_invalid_binary_borrowed(home):
    make_plugin(home / "plugins", "zeta", mode="bad-metadata")  # invalid: listed as "zeta"
    with SupervisorProc(home) as sup:
        assert sup.info("zeta")["state"] == "invalid"
        make_plugin(home / "plugins", "zeta", name="a-real-zeta")  # valid id "zeta"
        sup.call("rescan")
        assert sup.info("zeta")["binary"] == "a-real-zeta.binary"
        assert sup.info("zeta.binary")["state"] == "invalid"


def test_restart_op_errors_and_a_plugin_in_backoff_restarts_at_once(home):
    """``restart``: unknown 404, not enabled 409, a failing new process 502 with the old one
    still serving; a plugin waiting out a long backoff starts again at once."""
    make_plugin(home / "plugins", "alpha")
    make_plugin(home / "plugins", "beta", mode="crash-start")
    make_plugin(home / "plugins", "gamma")
    enable_on_disk(home, "alpha", "beta")
    # far longer than the test; the broken binary is swapped in by hand (no pin: test_pins.py)
    env = {"TORU_RESTART_BACKOFF": str(timing.scaled(300)), "TORU_PIN_BINARIES": "false"}
    with SupervisorProc(home, env=env) as sup:
        with pytest.raises(NotFound):
            sup.call("restart", {"plugin": "nope"})
        with pytest.raises(Conflict, match="not enabled"):
            sup.call("restart", {"plugin": "gamma"})
        sup.wait_state("beta", "backoff")
        crashes = len(sup.call("events", {"plugin": "beta"}))
        sup.call("restart", {"plugin": "beta"})  # not after the 300 s backoff: now
        wait_for(lambda: len(sup.call("events", {"plugin": "beta"})) > crashes)
        pid = sup.wait_state("alpha", "running")["pid"]
        binary = home / "plugins" / "alpha.binary"
        sig = binary.stat()
        make_plugin(home / "plugins", "alpha", mode="crash-start")  # broken, not rescanned yet
        os.utime(binary, ns=(sig.st_atime_ns, sig.st_mtime_ns + 1))
        with pytest.raises(BadGateway, match="not restarted: the new version failed to start"):
            sup.call("restart", {"plugin": "alpha"})
        info = sup.info("alpha")
        assert info["pid"] == pid and info["state"] == "running" and info["upgrade_error"]
        got = json.loads(sup.client.http("alpha", "GET", "/pid").body)
        assert got["pid"] == pid


def test_after_a_failed_upgrade_the_old_process_crashing_runs_the_file_on_disk(home):
    """The documented choice (docs/ARCHITECTURE.md, "Zero-downtime upgrade"): a broken new
    version waits while the old process serves; once that one crashes, the restart runs the
    file on disk, so the plugin goes to backoff with the new version's failure, as without
    upgrades."""
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    with SupervisorProc(home, env={"TORU_PIN_BINARIES": "false"}) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        make_plugin(home / "plugins", "alpha", mode="crash-start")
        wait_for(lambda: sup.info("alpha")["upgrade_error"])
        assert sup.info("alpha")["pid"] == pid
        os.kill(pid, signal.SIGKILL)

        def crashed_starting() -> bool:
            events = sup.call("events", {"plugin": "alpha"})
            return any(
                e["event_type"] == "crashed" and e["details"].get("phase") == "starting"
                for e in events
            )

        wait_for(crashed_starting)
        assert sup.info("alpha")["state"] in ("backoff", "starting", "failed")


def test_restart_does_not_run_a_changed_binary_that_is_not_approved(home):
    """With pinning on (the default), a file swapped in by hand waits for an approve: a
    restart refuses it (409) and the approved process serves on; after approve, the swap."""
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    with SupervisorProc(home) as sup:
        pid = sup.wait_state("alpha", "running")["pid"]
        make_plugin(home / "plugins", "alpha", mode="ooo")  # not installed: not pinned
        with pytest.raises(Conflict, match="approve it first"):
            sup.call("restart", {"plugin": "alpha"})
        info = sup.info("alpha")
        assert info["pid"] == pid and info["binary_change"] is not None
        sup.call("approve", {"plugin": "alpha"})
        info = wait_for(lambda: (i := sup.info("alpha"))["pid"] != pid and i)
        assert info["state"] == "running" and info["binary_change"] is None
        upgraded = [
            e for e in sup.call("events", {"plugin": "alpha"}) if e["event_type"] == "upgraded"
        ]
        assert upgraded and upgraded[0]["details"]["old_pid"] == pid


def test_a_killed_supervisors_instance_socket_dirs_are_removed_at_start(home):
    """An upgrade's new instance has ``run/p/<id>.<n>/``; after a ``kill -9`` of the
    supervisor mid-upgrade it would stay forever: the next start removes it."""
    make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")
    stale = home / "run" / "p" / "alpha.3"
    stale.mkdir(parents=True)
    (stale / "plugin.sock").write_text("")
    with SupervisorProc(home) as sup:
        sup.wait_state("alpha", "running")
        assert not stale.exists()
        assert (home / "run" / "p" / "alpha" / "plugin.sock").exists()
