"""Binary pinning (issue 13) and ``toru plugins install`` (issue 14) through a real supervisor.

The "attacker" binary is a shell script that writes a marker file before it runs the good
plugin: if anything of it runs (``--metadata`` or the plugin itself) the marker exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from toru.errors import ToruError

from .. import timing
from .helpers import (
    MISBEHAVE,
    SupervisorProc,
    enable_on_disk,
    make_plugin,
    pid_alive,
    scrape_metrics,
    wait_for,
)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def pins(home: Path) -> dict:
    return json.loads((home / "var" / "binary-pins.json").read_text())["pins"]


def swap_in(home: Path, plugin_id: str, marker: Path, name: str | None = None) -> Path:
    """Replace ``<id>.binary`` by rename (as an attacker with write access to plugins/)."""
    plugins = home / "plugins"
    evil = plugins / f".evil-{plugin_id}"
    evil.write_text(
        f'#!/bin/sh\necho ran >> "{marker}"\n'
        f'exec "{sys.executable}" -I "{MISBEHAVE}" good {plugin_id} "$@"\n'
    )
    evil.chmod(0o755)
    target = plugins / f"{name or plugin_id}.binary"
    os.replace(evil, target)
    return target


def events(sup: SupervisorProc, plugin: str) -> list[dict]:
    return sup.call("events", {"plugin": plugin, "limit": 50})


def cli(home: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "toru.cli", "plugins", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=timing.WAIT,
        env={**os.environ, **(env or {})},
    )


def test_enable_pins_the_hash(home):
    binary = make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        pin = pins(home)["alpha"]
        assert pin["sha256"] == sha(binary) and pin["binary"] == "alpha.binary"
        assert pin["how"] == "enable"
        assert (home / "var" / "binary-pins.json").stat().st_mode & 0o077 == 0


def test_replaced_binary_is_changed_and_never_runs_until_approved(home, tmp_path):
    marker = tmp_path / "evil-ran"
    binary = make_plugin(home / "plugins", "alpha")
    old_hash = sha(binary)
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        pid = sup.wait_state("alpha", "running")["pid"]
        swap_in(home, "alpha", marker)
        new_hash = sha(binary)
        sup.call("rescan")
        info = sup.info("alpha")
        # the old version keeps serving from its old inode; the change waits for approval
        assert info["state"] == "running" and info["pid"] == pid
        listed = cli(home, "list")
        assert "binary changed, not approved" in listed.stdout and new_hash in listed.stdout
        assert info["binary_change"] == {
            "pinned_sha256": old_hash,
            "found_sha256": new_hash,
            "binary": "alpha.binary",
        }
        changed = [e for e in events(sup, "alpha") if e["event_type"] == "binary_changed"]
        assert len(changed) == 1
        assert changed[0]["details"]["pinned_sha256"] == old_hash
        assert changed[0]["details"]["found_sha256"] == new_hash
        # the old process dies: the new binary is not started in its place
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: sup.info("alpha")["state"] == "changed", timing.WAIT)
        with pytest.raises(ToruError) as err:
            sup.call("enable", {"plugin": "alpha"})
        assert err.value.code == "binary_changed"
        sup.call("rescan")
        assert sup.info("alpha")["state"] == "changed"
        assert not marker.exists()
        # what the ToruPluginBinaryChanged alert reads (deploy/prometheus/alerts.yml)
        text = scrape_metrics(home)
        assert 'toru_plugin_state{plugin="alpha",state="changed"} 1.0' in text, text
        assert 'toru_plugin_state{plugin="alpha",state="running"} 0.0' in text
        assert 'toru_plugin_up{plugin="alpha"} 0.0' in text
        log = (home / "var" / "log" / "plugin-supervisor.log").read_text()
        assert "binary_changed" in log
        # approval pins the new hash and runs it
        approved = sup.call("approve", {"plugin": "alpha"})
        assert approved["state"] == "running", approved
        assert approved["binary_change"] is None
        assert 'toru_plugin_state{plugin="alpha",state="changed"} 0.0' in scrape_metrics(home)
        assert pins(home)["alpha"]["sha256"] == new_hash
        assert marker.exists()
        assert not pid_alive(pid)


def test_pinning_off_runs_a_replaced_binary(home, tmp_path):
    marker = tmp_path / "ran"
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home, env={"TORU_PIN_BINARIES": "false"}) as sup:
        sup.call("enable", {"plugin": "alpha"})
        pid = sup.wait_state("alpha", "running")["pid"]
        swap_in(home, "alpha", marker)
        sup.call("rescan")
        info = wait_for(
            lambda: (i := sup.info("alpha"))["state"] == "running" and i["pid"] != pid and i
        )
        assert info["binary_change"] is None
        assert marker.exists()
    assert not (home / "var" / "binary-pins.json").exists()


def test_old_home_pins_at_first_start_and_catches_a_swap_while_down(home, tmp_path):
    marker = tmp_path / "ran"
    binary = make_plugin(home / "plugins", "alpha")
    enable_on_disk(home, "alpha")  # a home from before pinning: enabled, no pin file
    with SupervisorProc(home) as sup:
        sup.wait_state("alpha", "running")
        assert pins(home)["alpha"] == {**pins(home)["alpha"], "how": "first-start"}
        assert pins(home)["alpha"]["sha256"] == sha(binary)
    log = (home / "var" / "log" / "plugin-supervisor.log").read_text()
    assert "pinned alpha.binary (first-start)" in log
    swap_in(home, "alpha", marker)
    with SupervisorProc(home) as sup:
        info = sup.info("alpha")
        assert info["state"] == "changed" and info["enabled"] is True
        assert info["binary_change"]["found_sha256"] == sha(binary)
        assert any(e["event_type"] == "binary_changed" for e in events(sup, "alpha"))
        assert not marker.exists()
    listed = cli(home, "--json", "list")  # offline: the changed binary is not run to list it
    assert listed.returncode == 0, listed.stderr
    assert [p["state"] for p in json.loads(listed.stdout)] == ["changed"]
    assert not marker.exists()
    # approved offline (no supervisor): it runs at the next start
    done = cli(home, "approve", "alpha")
    assert done.returncode == 0, done.stderr
    with SupervisorProc(home) as sup:
        assert sup.wait_state("alpha", "running")["binary_change"] is None
    assert marker.exists()


def test_install_offline_then_online_upgrade(home, tmp_path):
    src = make_plugin(tmp_path / "build", "alpha")
    done = cli(home, "install", str(src))
    assert done.returncode == 0, done.stderr
    target = home / "plugins" / "alpha.binary"
    assert target.read_bytes() == src.read_bytes() and os.access(target, os.X_OK)
    assert pins(home)["alpha"]["how"] == "install"
    assert sorted(p.name for p in (home / "plugins").iterdir()) == ["alpha.binary"]
    with SupervisorProc(home) as sup:
        assert sup.info("alpha")["state"] == "stopped"  # a new plugin starts disabled
        sup.call("enable", {"plugin": "alpha"})
        pid = sup.wait_state("alpha", "running")["pid"]
        v2 = tmp_path / "v2" / "alpha.binary"
        v2.parent.mkdir()
        v2.write_text(src.read_text() + "# v2\n")
        v2.chmod(0o755)
        done = cli(home, "install", str(v2))
        assert done.returncode == 0, done.stderr
        assert "upgraded" in done.stdout
        info = sup.wait_state("alpha", "running")
        assert info["pid"] != pid and info["binary_change"] is None
        assert pins(home)["alpha"]["sha256"] == sha(v2)
        # a new plugin installed online with --enable starts at once
        beta = make_plugin(tmp_path / "build", "beta")
        done = cli(home, "install", "--enable", str(beta))
        assert done.returncode == 0, done.stderr
        assert sup.info("beta")["state"] == "running"


@pytest.mark.parametrize("online", [False, True])
def test_install_refuses_bad_binaries_and_leaves_nothing(home, tmp_path, online):
    make_plugin(home / "plugins", "alpha", name="alpha-old")  # id alpha, another file name
    not_exec = tmp_path / "x.binary"
    not_exec.write_text("#!/bin/sh\n")
    bad_meta = make_plugin(tmp_path, "beta", mode="bad-metadata")
    clash = make_plugin(tmp_path / "c", "alpha")
    before = sorted(p.name for p in (home / "plugins").iterdir())
    sup = SupervisorProc(home).start() if online else None
    try:
        for path, words in (
            (not_exec, "not executable"),
            (bad_meta, "not a valid plugin"),
            (clash, "already provided by alpha-old.binary"),
        ):
            if path is clash and not online:
                continue  # offline, only the supervisor's memory knows alpha-old's id
            done = cli(home, "install", str(path))
            assert done.returncode == 1 and words in done.stderr, (path, done.stderr)
            assert sorted(p.name for p in (home / "plugins").iterdir()) == before
    finally:
        if sup is not None:
            sup.stop()


def test_abandoned_install_files_are_swept_at_start(home):
    plugins = home / "plugins"
    plugins.mkdir(parents=True)
    old, fresh = plugins / ".install-dead.tmp", plugins / ".install-busy.tmp"
    for f in (old, fresh):
        f.write_bytes(b"half a binary")
    os.utime(old, (1, 1))  # long abandoned (a worker died mid-upload)
    with SupervisorProc(home):
        pass
    assert not old.exists() and fresh.exists()  # a fresh one may be an upload under way


def test_offline_enable_pins_and_refuses_a_changed_binary(home, tmp_path):
    binary = make_plugin(home / "plugins", "alpha")
    done = cli(home, "enable", "alpha")  # no supervisor: config.json and the pin
    assert done.returncode == 0, done.stderr
    assert pins(home)["alpha"]["sha256"] == sha(binary)
    swap_in(home, "alpha", tmp_path / "ran")
    done = cli(home, "enable", "alpha")
    assert done.returncode == 1 and "approve alpha" in done.stderr, done.stderr
    done = cli(home, "enable", "beta")  # not installed yet: pinned when first seen
    assert done.returncode == 0, done.stderr
    assert pins(home)["beta"]["sha256"] == ""
    make_plugin(home / "plugins", "beta")
    with SupervisorProc(home) as sup:
        assert sup.wait_state("beta", "running")
        assert sup.info("alpha")["state"] == "changed"
    assert pins(home)["beta"]["sha256"] == sha(home / "plugins" / "beta.binary")
    assert not (tmp_path / "ran").exists()


def test_a_swap_with_forged_mtime_and_size_is_caught_before_the_respawn(home, tmp_path):
    """The rescan's cheap signature (mtime, size) misses this swap; the check right before
    the next spawn (after a crash) does not."""
    marker = tmp_path / "ran"
    base = f'exec "{sys.executable}" -I "{MISBEHAVE}" good alpha "$@"\n'
    touch = f'echo ran >> "{marker}"\n'
    binary = home / "plugins" / "alpha.binary"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n" + base + "#" * 200 + "\n")
    binary.chmod(0o755)
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        pid = sup.wait_state("alpha", "running")["pid"]
        st = binary.stat()
        evil = "#!/bin/sh\n" + touch + base + "#" * (200 - len(touch)) + "\n"
        with open(binary, "r+") as f:  # in place: same inode, same size
            f.write(evil)
        os.utime(binary, ns=(st.st_atime_ns, st.st_mtime_ns))  # and the old mtime
        assert binary.stat().st_size == st.st_size
        sup.call("rescan")
        assert sup.info("alpha")["binary_change"] is None  # the signature did not move
        os.kill(pid, signal.SIGKILL)
        info = wait_for(lambda: (i := sup.info("alpha"))["state"] == "changed" and i)
        assert info["binary_change"]["found_sha256"] == sha(binary)
        assert not marker.exists()
