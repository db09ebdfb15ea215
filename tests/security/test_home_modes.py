"""Private files: umask 077 for what Toru creates, and a home made by an older Toru (files
0644 in a 0755 var/) tightened at start with a warning naming each change. These need no
root: they run everywhere."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from tests import timing
from tests.servers import ToruServer
from tests.supervisor.helpers import ROOT, SupervisorProc, wait_for
from toru.store import Store

from .helpers import doctor_lines, needs_root, unit_supervisor

OLD_DIR, OLD_FILE = 0o755, 0o644


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def make_old_home(home: Path) -> list[Path]:
    """A home as the code before issue 13 left it: world-readable database, WAL, SHM, logs,
    plugin state, first password and toru.toml. Returns the private paths it made."""
    var = home / "var"
    logs = var / "log" / "plugins"
    logs.mkdir(parents=True)
    store = Store(var / "toru.db")
    store.migrate()
    store.close()
    files = [
        var / "toru.db",
        var / "toru.db-wal",
        var / "toru.db-shm",
        var / "initial-admin-password",
        var / "log" / "plugin-supervisor.log",
        logs / "old.log",
        home / "plugins" / ".metadata" / "config.json",
        home / "toru.toml",
    ]
    (home / "plugins" / ".metadata").mkdir(parents=True)
    for f in files:
        if not f.exists():
            f.write_text(
                json.dumps({"version": 1, "plugins": {}}) if f.name == "config.json" else ""
            )
    dirs = [var, var / "log", logs, home / "plugins" / ".metadata"]
    for d in dirs:
        d.chmod(OLD_DIR)
    for f in files:
        f.chmod(OLD_FILE)
    return dirs + files


def test_old_home_is_tightened_by_toru_serve_with_a_warning(short_home):
    paths = make_old_home(short_home)
    with ToruServer(short_home) as server:
        out = server.output()
        modes = {p: _mode(p) for p in paths}
        created = [p for p in (short_home / "var").rglob("*") if _mode(p) & 0o077]
    for path in paths:
        want = 0o700 if path.is_dir() else 0o600
        assert modes[path] == want, (path, oct(modes[path]))
        assert f"{path} {OLD_DIR if path.is_dir() else OLD_FILE:04o}->{want:04o}" in out, out
    assert "warning: an existing home was too open" in out
    assert created == []  # and what the new run created (metrics, logs) is private too
    doctor = doctor_lines(short_home)
    assert not [x for x in doctor if "accessible by" in x], doctor


def test_old_home_is_tightened_by_toru_supervisor_into_its_log(short_home):
    paths = make_old_home(short_home)
    (short_home / "run").mkdir(mode=OLD_DIR)
    (short_home / "run").chmod(OLD_DIR)
    with SupervisorProc(short_home):
        log = (short_home / "var" / "log" / "plugin-supervisor.log").read_text()
        run_mode = _mode(short_home / "run")
        modes = {p: _mode(p) for p in paths}  # the WAL is gone after a clean stop
    lines = [json.loads(line) for line in log.splitlines() if "tightened" in line]
    assert len(lines) == 1 and lines[0]["level"] == "warn", lines
    for path in paths:
        assert str(path) in lines[0]["message"]
        assert modes[path] == (0o700 if path.is_dir() else 0o600)
    assert run_mode == 0o700  # plugins run as Toru's own uid here: nothing to open


def test_cli_creates_private_files(short_home):
    """`toru plugins enable` on a fresh home: state file 0600 in a 0700 .metadata."""
    done = subprocess.run(
        [sys.executable, "-m", "toru.cli", "plugins", "--home", str(short_home), "enable", "x"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TORU_HOME": str(short_home)},
    )
    assert done.returncode == 0, done.stderr
    state = short_home / "plugins" / ".metadata" / "config.json"
    assert _mode(state) == 0o600 and _mode(state.parent) == 0o700


@needs_root
def test_a_file_toru_cannot_chmod_is_named_not_fatal(short_home):
    """Toru as a plain user (the units) on a home with a root-owned, world-readable
    toru.toml: the supervisor starts and its warning says what it could not tighten."""
    toml = short_home / "toru.toml"
    toml.write_text("")
    toml.chmod(OLD_FILE)  # root's, as `sudo vi toru.toml` leaves it
    proc = unit_supervisor(short_home, keep=(toml,))
    log = short_home / "var" / "log" / "plugin-supervisor.log"
    try:
        wait_for(lambda: proc.poll() is None and "supervisor ready" in _read(log), 60)
    finally:
        proc.terminate()
        proc.wait(timing.WAIT)
    assert f"{toml} 0644 left as it is (Operation not permitted; owner uid 0)" in _read(log)
    assert _mode(toml) == OLD_FILE


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@needs_root
def test_doctor_warns_when_a_plain_toru_runs_plugins_as_itself(short_home):
    (short_home / "var").mkdir(mode=0o700)
    os.chown(short_home / "var", 70500, 70500)  # Toru runs as a plain user here

    def findings(plugins_user: str) -> list[str]:
        lines = doctor_lines(short_home, TORU_PLUGINS_USER=plugins_user)
        return [x for x in lines if "plugins.user" in x]

    unset = findings("")
    assert len(unset) == 1 and unset[0].startswith("warning: plugins.user is unset"), unset
    assert "plugins run as 70500" in unset[0]
    assert findings("nobody") == []
