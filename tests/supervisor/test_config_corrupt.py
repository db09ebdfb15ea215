"""A damaged ``plugins/.metadata/config.json`` and a database that is not one (issue 11 item 5).

config.json: kept aside as ``config.json.corrupt-<time>``, what is readable recovered and
written back, an error in the log naming the file, a warning in the control op ``warnings``,
and the next enable never drops the other entries. The database: garbage gives one line
naming the file and exit 1 (no traceback, file untouched) for ``toru supervisor``, ``toru
serve`` and the CLI; a damaged one is found at start by ``PRAGMA quick_check`` and reported
by ``ping`` (so ``/healthz`` fails; tests/web/test_store_health.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from toru.store import Store
from toru.supervisor.plugin_state_file import (
    PluginStateFile,
    StateFileUnreadable,
    StateProblem,
    load_state,
    set_enabled,
)

from .helpers import ROOT, SupervisorProc, damage_database, make_plugin, wait_for

TRUNCATED = '{"version": 1, "plugins": {"alpha": {"enabled": true}, "beta": {"enabled": true}, "ga'


def _state(home: Path) -> Path:
    return home / "plugins" / ".metadata" / "config.json"


def _kept(path: Path) -> list[Path]:
    return sorted(path.parent.glob("config.json.corrupt-*"))


# ---------------------------------------------------------------------------- unit


@pytest.mark.parametrize(
    ("text", "recovered"),
    [
        (TRUNCATED, {"alpha": True, "beta": True}),
        ("[]", {}),
        ("null", {}),
        ('{"version": 1, "plugins": ["alpha"]}', {}),
        (
            '{"version": 1, "plugins": {"a": {"enabled": true}, "b": {"enabled": "yes"}, "c": 3}}',
            {"a": True, "b": False},
        ),
        ("", {}),
    ],
)
def test_damaged_file_is_kept_and_repaired(tmp_path, text, recovered):
    path = tmp_path / "config.json"
    path.write_text(text)
    problems: list[StateProblem] = []
    state = load_state(path, problems.append)
    assert {k: v["enabled"] for k, v in state.items()} == recovered
    [kept] = _kept(path)
    assert kept.read_text() == text  # the damaged bytes, exactly
    assert len(problems) == 1 and problems[0].kept_as == kept
    assert str(path) in problems[0].message()
    # Repaired on disk: the next read is clean and reports nothing.
    assert load_state(path, problems.append) == state and len(problems) == 1


def test_enable_on_a_damaged_file_keeps_the_other_entries(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(TRUNCATED)
    set_enabled(path, "delta", True)
    state = load_state(path)
    assert {k for k, v in state.items() if v["enabled"]} == {"alpha", "beta", "delta"}
    assert len(_kept(path)) == 1


def test_a_sound_file_is_not_touched(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"alpha": {"enabled": True}}))  # the original flat form
    assert load_state(path, lambda p: pytest.fail(f"reported {p}"))["alpha"]["enabled"]
    assert _kept(path) == []


def test_an_unreadable_file_is_never_overwritten(tmp_path):
    path = tmp_path / "config.json"
    path.mkdir()  # EISDIR on read: as unreadable as EACCES or EIO, and testable as root
    with pytest.raises(StateFileUnreadable):
        load_state(path)
    with pytest.raises(StateFileUnreadable):
        set_enabled(path, "alpha", True)
    assert path.is_dir() and list(path.iterdir()) == []

    errors: list[str] = []
    log = SimpleNamespace(error=lambda message, *a, **kw: errors.append(message))
    handle = PluginStateFile(path, log)
    assert handle.load() == {} and handle.load() == {}
    assert len(errors) == 1  # said once, not at every rescan
    [warning] = handle.warnings()
    assert warning["code"] == "plugin_state_unreadable" and str(path) in warning["message"]


# ---------------------------------------------------------------------------- supervisor


def test_supervisor_recovers_a_truncated_config_and_warns(home):
    for pid in ("alpha", "beta", "gamma"):
        make_plugin(home / "plugins", pid)
    state = _state(home)
    state.parent.mkdir(parents=True)
    state.write_text(TRUNCATED)
    with SupervisorProc(home) as sup:
        # Not read as "all disabled": the two readable entries come up.
        sup.wait_state("alpha", "running")
        sup.wait_state("beta", "running")
        assert sup.info("gamma")["state"] == "stopped"
        [kept] = _kept(state)
        assert kept.read_text() == TRUNCATED
        [warning] = sup.call("warnings")
        assert warning["code"] == "plugin_state_corrupt"
        assert warning["kept_as"] == str(kept) and str(state) in warning["message"]
        log = (home / "var" / "log" / "plugin-supervisor.log").read_text()
        assert any(
            json.loads(line)["level"] == "error" and kept.name in line for line in log.splitlines()
        )
        # The next enable adds gamma and keeps alpha and beta.
        sup.call("enable", {"plugin": "gamma"})
        enabled = {k for k, v in json.loads(state.read_text())["plugins"].items() if v["enabled"]}
        assert enabled == {"alpha", "beta", "gamma"}
    # The warning outlives a restart (an operator may not have looked yet) and goes away
    # when the operator deletes the kept copy.
    with SupervisorProc(home) as sup:
        assert [w["kept_as"] for w in sup.call("warnings")] == [str(kept)]
        sup.wait_state("gamma", "running")
        kept.unlink()
        assert sup.call("warnings") == []


@pytest.mark.parametrize("text", ["[]", "null", '{"version": 1, "plugins": 7}'])
def test_supervisor_keeps_a_config_of_the_wrong_shape(home, text):
    make_plugin(home / "plugins", "alpha")
    make_plugin(home / "plugins", "beta")
    state = _state(home)
    state.parent.mkdir(parents=True)
    state.write_text(text)
    with SupervisorProc(home) as sup:
        wait_for(lambda: sup.call("warnings"))
        assert [k.read_text() for k in _kept(state)] == [text]
        sup.call("enable", {"plugin": "alpha"})
        assert json.loads(state.read_text())["plugins"]["alpha"]["enabled"] is True
        assert [k.read_text() for k in _kept(state)] == [text]  # never overwritten


# ---------------------------------------------------------------------------- database


GARBAGE = b"definitely not an SQLite database\n" * 200


def _toru(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    import os

    from .helpers import FAST_ENV

    env = {**os.environ, **FAST_ENV}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "toru.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("supervisor", "--home", "{home}"),
        ("serve", "--home", "{home}", "--bind", "127.0.0.1:0"),
        ("user", "--home", "{home}", "list"),
        ("user", "--home", "{home}", "tokens"),
    ],
)
def test_a_garbage_database_gives_one_line_and_exit_1(home, argv):
    db = home / "var" / "toru.db"
    db.parent.mkdir(parents=True)
    db.write_bytes(GARBAGE)
    make_plugin(home / "plugins", "alpha")
    cp = _toru(home, *(a.format(home=home) for a in argv))
    assert cp.returncode == 1, cp
    lines = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, cp.stderr
    assert str(db) in lines[0] and "not an SQLite database" in lines[0]
    assert "Traceback" not in cp.stderr + cp.stdout
    assert db.read_bytes() == GARBAGE
    assert not (home / "var" / "toru.db-wal").exists()


def test_a_damaged_database_is_found_at_start_and_reported_by_ping(home):
    db = home / "var" / "toru.db"
    db.parent.mkdir(parents=True)
    damage_database(db)
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        store = sup.call("ping")["store"]
        assert store["ok"] is False and "malformed" in store["error"]
        codes = [w["code"] for w in sup.call("warnings")]
        assert codes == ["store_damaged"]
        # The supervisor still supervises: plugins can run.
        sup.call("enable", {"plugin": "alpha"})
        sup.wait_state("alpha", "running")
    log = (home / "var" / "log" / "plugin-supervisor.log").read_text()
    assert f"the database {db} is damaged" in log


def test_a_sound_database_pings_ok(home):
    with SupervisorProc(home) as sup:
        assert sup.call("ping") == {"ok": True, "store": {"ok": True}}
        assert sup.call("warnings") == []


def test_a_database_damaged_in_its_schema_gives_one_line_and_exit_1(home):
    db = home / "var" / "toru.db"
    db.parent.mkdir(parents=True)
    store = Store(db)
    store.migrate()
    store.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xcd" * (4096 - 100)  # page 1 after the header: sqlite_master
    db.write_bytes(bytes(data))
    cp = _toru(home, "supervisor", "--home", str(home))
    assert cp.returncode == 1 and "Traceback" not in cp.stderr
    [line] = [ln for ln in cp.stderr.splitlines() if ln.strip()]
    assert str(db) in line and "is damaged" in line
    assert db.read_bytes() == bytes(data)
