"""The shipped systemd units pass ``systemd-analyze verify`` and keep their promises.

verify checks every ExecStart/ExecStop/ExecReload program exists and is executable, so the
test installs the units the way docs/operations.md does, with one honest substitution: the
checkout is where /opt/toru would be. ``/opt/toru/.venv`` becomes the virtualenv running the
tests (``sys.prefix``, the repo's .venv under ``make test``), ``/opt/toru`` the repo root.
Everything else (``/var/lib/toru``, ``/run/toru``, the ``toru`` user) is as shipped: verify
does not need them to exist.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import timing
from tests.servers import ROOT, ToruServer
from tests.web.webtest_plugin import install
from toru.store import Store

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (Debian package systemd)",
)

UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
# Units that run plugins: they delegate a cgroup subtree to the supervisor.
PLUGIN_UNITS = {"toru.service", "toru-supervisor.service"}


def installed(unit: Path, dest: Path, text: str | None = None) -> Path:
    """``unit`` with the checkout and venv in place of /opt/toru, written under ``dest``."""
    text = unit.read_text() if text is None else text
    text = text.replace("/opt/toru/.venv", sys.prefix).replace("/opt/toru", str(ROOT))
    for program in re.findall(r"^Exec\w+=[-@:+!]*(\S+)", text, re.M):
        assert Path(program).is_file(), f"{unit.name}: {program} missing in this install"
    out = dest / unit.name
    out.write_text(text)
    return out


def verify(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["systemd-analyze", "verify", str(path)],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=60,
    )


def directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_three_units_ship():
    assert [u.name for u in UNITS] == [
        "toru-supervisor.service",
        "toru-web.service",
        "toru.service",
    ]


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_verifies_cleanly(unit, tmp_path):
    cp = verify(installed(unit, tmp_path))
    # rc 0 and not a single warning (unknown keys and bad values are warnings, rc 0)
    assert cp.returncode == 0 and not cp.stderr.strip() and not cp.stdout.strip(), (
        cp.stdout + cp.stderr
    )


def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a typo'd directive and a missing program are reported."""
    unit = UNITS[0]
    text = unit.read_text().replace("KillMode=control-group", "KillMode=control-groups")
    cp = verify(installed(unit, tmp_path, text))
    assert "control-groups" in cp.stderr, cp.stderr
    text = unit.read_text().replace("/opt/toru/.venv/bin/toru", "/opt/toru/.venv/bin/no-toru")
    path = tmp_path / unit.name
    path.write_text(text.replace("/opt/toru", str(ROOT)))
    cp = verify(path)
    assert cp.returncode != 0 and "no-toru" in cp.stderr, cp.stderr


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_unit_settings(unit):
    d = directives(unit)
    assert d["UMask"] == ["0077"]
    assert d["KillMode"] == ["control-group"]
    assert d["NoNewPrivileges"] == ["yes"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["PrivateTmp"] == ["yes"]
    assert d["User"] == ["toru"]
    # the ordered stop runs before the control-group kill: TERM the main process, wait for it
    assert d["ExecStop"] == [
        # ("-": the main process may be gone already, after a crash; then nothing to wait for)
        "-/bin/kill -TERM $MAINPID",
        "-/usr/bin/tail --pid=${MAINPID} -f /dev/null",
    ]
    env = dict(e.split("=", 1) for line in d.get("Environment", []) for e in shlex.split(line))
    if unit.name in PLUGIN_UNITS:
        assert d["Delegate"] == ["yes"]
        # plugins run as toru-plugin, created before the start if missing (docs/operations.md)
        assert env["TORU_PLUGINS_USER"] == "toru-plugin"
        assert any(
            "useradd --system" in c and c.endswith(" toru-plugin") for c in d["ExecStartPre"]
        )
        ambient = set(d["AmbientCapabilities"][0].split())
        assert ambient == {"CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_CHOWN", "CAP_DAC_OVERRIDE"}
        assert set(d["CapabilityBoundingSet"][0].split()) == ambient
        # options that would break the supervisor's cgroups or plugins are not set
        for key in ("ProtectControlGroups", "MemoryDenyWriteExecute", "SystemCallFilter"):
            assert key not in d, f"{unit.name}: {key} breaks plugins"
    else:
        assert "Delegate" not in d
        assert d["CapabilityBoundingSet"] == [""]


def test_the_stop_commands_stop_toru_serve_in_order(short_home):
    """toru.service's ExecStop lines, run as systemd would (``$MAINPID`` expanded), against
    a real ``toru serve``: it exits 0 by itself, its plugin got a clean stop, and the wait
    command returns once the main process is gone."""
    unit = ROOT / "deploy" / "systemd" / "toru.service"
    install(short_home / "plugins")
    server = ToruServer(short_home, enable=["web-test"], env={"TORU_SHUTDOWN_GRACE": "2"})
    server.start()
    try:
        pid = str(server.pid)
        kill, wait = (
            shlex.split(line.lstrip("-").replace("${MAINPID}", pid).replace("$MAINPID", pid))
            for line in directives(unit)["ExecStop"]
        )
        subprocess.run(kill, check=True, timeout=30)
        waiter = subprocess.Popen(wait)
        assert server.proc.wait(timing.WAIT) == 0, server.output()
        assert waiter.wait(timing.WAIT) == 0  # tail --pid noticed the exit
        # the supervisor stopped the plugin itself (shutdown message first), not a kill
        store = Store(short_home / "var" / "toru.db")
        last = store.events("web-test", limit=1)[0]
        store.close()
        assert last["event_type"] == "stopped", last
        assert "shutdown" in json.dumps(last["details"]), last
    finally:
        server.stop()
