"""Plugins run as an unprivileged identity and cannot reach Toru's keys (issue 13).

A real plugin (attack_plugin.py) tries, from inside, each thing the issue found a plugin
could do, and answers what it reached; the tests assert every attempt failed with EACCES,
through a real ``toru serve`` (per-plugin uids) and a real ``toru supervisor`` (the shipped
default, toru-plugin).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
import subprocess
from pathlib import Path

from tests import timing
from tests.servers import ToruServer, free_port
from tests.supervisor.helpers import (
    ROOT,
    SupervisorProc,
    enable_on_disk,
    pid_alive,
    wait_for,
)
from toru.supervisor.cgroups import home_cgroup
from toru.supervisor.client import ControlClient

from .helpers import (
    ATTACKS,
    SHIPPED_DEFAULT,
    as_unit_user,
    capabilities,
    install_attackers,
    needs_root,
    proc_ids,
    unit_supervisor,
)

IDS = ("attack-a", "attack-b")
POLL = 60.0  # seconds; wait_for and wait_state scale it by TORU_TEST_TIME_SCALE themselves


def _private_files(home) -> list[str]:
    """Everything under var/ that group or others can access (should be nothing)."""
    exposed = []
    for dirpath, dirnames, filenames in os.walk(home / "var"):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            mode = stat.S_IMODE(os.lstat(path).st_mode)
            if mode & 0o077:
                exposed.append(f"{path} {mode:04o}")
    return exposed


@needs_root
def test_per_plugin_uids_every_attack_fails_through_toru_serve(short_home):
    install_attackers(short_home, IDS)
    env = {**SHIPPED_DEFAULT, "TORU_PLUGINS_ISOLATION": "per-plugin"}
    with ToruServer(short_home, enable=list(IDS), env=env) as server:
        cookie, _ = server.login()

        def running(pid):
            status, got = server.json("GET", f"/api/plugins/{pid}", cookie=cookie)
            return status == 200 and got["state"] == "running" and got

        infos = [wait_for(lambda p=p: running(p), POLL) for p in IDS]
        results = {}
        for pid in IDS:
            status, got = server.json("GET", f"/api/plugins/route/{pid}/attack", cookie=cookie)
            assert status == 200, got
            results[pid] = got
        running_as = {pid: proc_ids(info["pid"]) for pid, info in zip(IDS, infos, strict=True)}
        uids = json.loads((short_home / "var" / "plugin-uids.json").read_text())
        exposed = _private_files(short_home)
    for pid in IDS:
        got = results[pid]
        reached = {name: got[name] for name in [*ATTACKS, "other_socket"]}
        assert set(reached.values()) == {"EACCES"}, (pid, reached)
        # its own uid from the range, gid the same number, no supplementary groups
        assert got["uid"] == uids[pid] and got["gid"] == uids[pid] and got["groups"] == []
        assert 70000 <= got["uid"] <= 79999
        assert running_as[pid] == (got["uid"], got["gid"])
        assert got["kv"] == f"from {pid}"  # its own KV channel still works
    assert results[IDS[0]]["uid"] != results[IDS[1]]["uid"]
    assert exposed == []  # database, WAL, SHM, logs, password: all owner-only
    assert stat.S_IMODE((short_home / "var" / "plugin-uids.json").stat().st_mode) == 0o600


@needs_root
def test_shared_default_is_toru_plugin_in_its_cgroup_and_dies_with_the_supervisor(short_home):
    install_attackers(short_home, IDS)
    enable_on_disk(short_home, *IDS)
    sup = SupervisorProc(short_home, env=SHIPPED_DEFAULT).start()
    try:
        pids = [sup.wait_state(p, "running", POLL)["pid"] for p in IDS]
        got = json.loads(sup.client.http(IDS[0], "GET", "/attack").body)
        log = (short_home / "var" / "log" / "plugin-supervisor.log").read_text()
        cgroup = home_cgroup(short_home)
        in_cgroup = [Path(f"/proc/{p}/cgroup").read_text() for p in pids]
        sup.kill9()
        # PR_SET_PDEATHSIG is set after the uid switch (the kernel clears it on one)
        wait_for(lambda: not any(pid_alive(p) for p in pids), POLL)
    finally:
        sup.stop()
    plugin_user = pwd.getpwnam("toru-plugin")
    assert (got["uid"], got["gid"], got["groups"]) == (plugin_user.pw_uid, plugin_user.pw_gid, [])
    assert got["kv"] == f"from {IDS[0]}"
    assert "plugins run as toru-plugin" in log
    reached = {name: got[name] for name in ATTACKS}
    assert set(reached.values()) == {"EACCES"}, reached
    # One shared uid: plugins can reach each other's sockets (documented; per-plugin fixes it)
    assert got["other_socket"] == "reached"
    if cgroup is not None:  # the cgroup move still happens before the switch
        for pid, text in zip(IDS, in_cgroup, strict=True):
            assert f"{cgroup.name}/{pid}" in text, text
    sock_dir = short_home / "run" / "p"
    assert stat.S_IMODE(sock_dir.stat().st_mode) == 0o711
    assert stat.S_IMODE((short_home / "run").stat().st_mode) == 0o711


@needs_root
def test_per_plugin_uid_is_stable_across_restarts(short_home):
    install_attackers(short_home, IDS)
    enable_on_disk(short_home, IDS[0])
    env = {**SHIPPED_DEFAULT, "TORU_PLUGINS_ISOLATION": "per-plugin"}
    seen = []
    for _ in range(2):
        with SupervisorProc(short_home, env=env) as sup:
            pid = sup.wait_state(IDS[0], "running", POLL)["pid"]
            seen.append(proc_ids(pid))
            owner = (short_home / "run" / "p" / IDS[0]).stat()
            assert (owner.st_uid, stat.S_IMODE(owner.st_mode)) == (seen[-1][0], 0o700)
    assert seen[0] == seen[1] and seen[0][0] >= 70000


NO_CAPS = {"0000000000000000"}


@needs_root
def test_non_root_toru_with_ambient_capabilities_passes_none_to_plugins(short_home):
    """The systemd units run Toru as a plain user with AmbientCapabilities; switching between
    two non-root uids keeps capabilities, so the child must drop them or a plugin would
    inherit CAP_DAC_OVERRIDE and read everything."""
    install_attackers(short_home, IDS)
    enable_on_disk(short_home, IDS[0])
    proc = unit_supervisor(short_home, TORU_PLUGINS_USER="nobody")
    client = ControlClient(short_home / "run" / "supervisor.sock", timeout=timing.WAIT)
    try:

        def running():
            if proc.poll() is not None:
                raise AssertionError((short_home / "supervisor.stderr").read_text())
            info = client.call("get", {"plugin": IDS[0]})
            return info["state"] == "running" and info

        info = wait_for(running, POLL)
        got = json.loads(client.http(IDS[0], "GET", "/attack").body)
        caps = capabilities(info["pid"])
        supervisor_caps = capabilities(proc.pid)
    finally:
        client.close()
        proc.terminate()
        proc.wait(timing.WAIT)
    nobody = pwd.getpwnam("nobody")
    assert (got["uid"], got["gid"]) == (nobody.pw_uid, nobody.pw_gid)
    assert set(caps.values()) == NO_CAPS, caps
    assert supervisor_caps["CapEff"] != "0000000000000000"  # the test did grant them
    log = (short_home / "var" / "log" / "plugin-supervisor.log").read_text()
    assert "plugins cannot start" not in log  # the start-up check agrees: all five are there
    reached = {name: got[name] for name in ATTACKS}
    assert set(reached.values()) == {"EACCES"}, reached


@needs_root
def test_toru_serve_as_the_units_run_it_gives_no_capability_to_gunicorn_or_plugins(short_home):
    """``toru serve`` as toru.service runs it: the supervisor keeps the capabilities it needs,
    gunicorn and its workers and the plugins get none, and a plugin reaches nothing."""
    install_attackers(short_home, IDS)
    enable_on_disk(short_home, IDS[0])
    port = free_port()
    bind = f"127.0.0.1:{port}"
    argv, extra = as_unit_user(short_home, "serve", "--home", str(short_home), "--bind", bind)
    env = {**extra, "TORU_PLUGINS_USER": "nobody"}
    server = ToruServer(short_home, bind=bind, env=env)
    with open(short_home / "serve.out", "ab") as out:
        proc = subprocess.Popen(
            argv, env=server.child_env(), cwd=ROOT, stdout=out, stderr=out, start_new_session=True
        )
    server.proc = proc  # stop() and request() work on it
    try:

        def healthy():
            if proc.poll() is not None:
                raise AssertionError(server.output())
            return server.request("GET", "/healthz", timeout=2)[0] == 200

        wait_for(healthy, POLL)
        cookie, _ = server.login()

        def running():
            status, got = server.json("GET", f"/api/plugins/{IDS[0]}", cookie=cookie)
            return status == 200 and got["state"] == "running" and got

        info = wait_for(running, POLL)
        status, got = server.json("GET", f"/api/plugins/route/{IDS[0]}/attack", cookie=cookie)
        tree = {int(p): capabilities(int(p)) for p in _descendants(proc.pid)}
        names = {p: Path(f"/proc/{p}/cmdline").read_bytes() for p in tree}
    finally:
        server.stop()
    assert status == 200, (got, server.output())
    assert set(got[name] for name in ATTACKS) == {"EACCES"}, got
    web = [p for p, cmd in names.items() if b"gunicorn" in cmd]
    sup = [p for p, cmd in names.items() if b"supervisor" in cmd]
    assert web and sup, names
    for pid in [*web, info["pid"]]:
        assert set(tree[pid].values()) == NO_CAPS, (names.get(pid), tree[pid])
    assert tree[sup[0]]["CapEff"] != "0000000000000000"


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc's ppid fields)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@needs_root
def test_a_binary_the_plugin_user_cannot_run_says_why(short_home, tmp_path):
    hidden = tmp_path / "hidden"  # 0700 root: the plugin user cannot traverse it
    hidden.mkdir(mode=0o700)
    script = hidden / "real"
    script.write_text("#!/bin/sh\necho '{}'\n")
    script.chmod(0o755)
    binary = short_home / "plugins" / "locked.binary"
    binary.parent.mkdir(parents=True)
    binary.write_text(f'#!/bin/sh\nexec {script} "$@"\n')
    binary.chmod(0o755)
    sup = SupervisorProc(short_home, env=SHIPPED_DEFAULT).start(settle=False)
    try:
        entry = wait_for(lambda: next((p for p in sup.call("list") if p.get("error")), None), POLL)
    finally:
        sup.stop()
    assert "Permission denied" in entry["error"], entry
    assert "plugins run as toru-plugin" in entry["error"], entry


@needs_root
def test_a_plain_toru_without_the_capabilities_says_so_at_start(short_home):
    proc = unit_supervisor(short_home, caps="", TORU_PLUGINS_USER="nobody")
    log = short_home / "var" / "log" / "plugin-supervisor.log"
    try:
        wait_for(lambda: log.exists() and "supervisor ready" in log.read_text(), POLL)
    finally:
        proc.terminate()
        proc.wait(timing.WAIT)
    assert (
        "plugins cannot start as nobody (uid 65534, gid 65534): Toru is not root and lacks "
        "CAP_SETUID, CAP_SETGID, CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_KILL"
    ) in log.read_text()


@needs_root
def test_the_examples_work_as_the_plugin_user(short_home, example_plugins):
    """What `make run` does: the four examples (Python zipapps on `/usr/bin/env python3`,
    Node, a raw single-file plugin) through toru serve, each answering as toru-plugin."""
    ids = sorted(example_plugins)
    plugins = [example_plugins[i] for i in ids]
    server = ToruServer(short_home, plugins=plugins, enable=ids, env=SHIPPED_DEFAULT)
    with server:
        cookie, _ = server.login()

        def all_running():
            status, got = server.json("GET", "/api/plugins", cookie=cookie)
            return status == 200 and all(p["state"] == "running" for p in got) and got

        listed = wait_for(all_running, POLL)
        answers = {
            p["id"]: server.request("GET", f"/api/plugins/route{p['route']}/", cookie=cookie)[0]
            for p in listed
        }
        owners = {p["id"]: proc_ids(p["pid"]) for p in listed}
    plugin_user = pwd.getpwnam("toru-plugin")
    assert sorted(answers) == ids and set(answers.values()) == {200}, answers
    assert set(owners.values()) == {(plugin_user.pw_uid, plugin_user.pw_gid)}, owners
