"""``toru doctor`` through the CLI on real homes: one made by a real ``toru serve`` (under
the shipped units' UMask=0077), checked while it runs and after it stopped, then copies of
it broken the ways operators break them (modes, a corrupt database, a bad config.json, a
port taken by another program, a mismatched nginx site, a missing plugin user).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from tests.servers import ROOT, ToruServer, free_port
from tests.web.webtest_plugin import install

SITE = ROOT / "deploy" / "nginx" / "toru.conf"


def doctor(home: Path, *args: str, env: dict | None = None) -> tuple[int, list[str]]:
    """Run ``toru doctor --home HOME ARGS``; returns (exit code, finding lines)."""
    cp = subprocess.run(
        [sys.executable, "-m", "toru.cli", "doctor", "--home", str(home), *args],
        cwd=ROOT,
        # "": unset (tests/conftest.py names the suite's own uid as plugins.user)
        env={**os.environ, "TORU_BIND": "", "TORU_PLUGINS_USER": "", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert not cp.stderr.strip(), cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0].startswith("toru doctor: home"), cp.stdout
    return cp.returncode, [x for x in lines if x.startswith(("problem:", "warning:"))]


def problems(lines: list[str]) -> list[str]:
    return [x for x in lines if x.startswith("problem:")]


@pytest.fixture(scope="module")
def made_home():
    """A home made by a real ``toru serve`` with a plugin enabled, as the systemd unit makes
    it (umask 077); yields ``(home, running server)``, stops the server at the end."""
    home = Path(tempfile.mkdtemp(prefix="toru-doc-", dir="/tmp"))
    old = os.umask(0o077)
    try:
        install(home / "plugins")
        server = ToruServer(home, enable=["web-test"])
        (home / "toru.toml").write_text(f'bind = "{server.bind}"\n')
        server.start()
    finally:
        os.umask(old)
    try:
        yield home, server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def stopped_home(made_home, tmp_path):
    """A copy of the made home (modes kept), with no server running on it."""
    home, _ = made_home
    copy = tmp_path / "home"
    shutil.copytree(home, copy, symlinks=True, ignore=shutil.ignore_patterns("run"))
    (copy / "toru.toml").write_text(f'bind = "127.0.0.1:{free_port()}"\n')
    return copy


def test_good_home_while_running_and_stopped(made_home, stopped_home):
    home, _ = made_home
    assert (home / "var" / "toru.db").exists() and (home / "plugins" / ".metadata").is_dir()
    # the bind address is in use, by a running Toru: that is fine
    rc, lines = doctor(home)
    assert rc == 0 and not problems(lines), lines
    rc, lines = doctor(stopped_home)
    assert rc == 0 and not problems(lines), lines


def test_wrong_modes_are_reported_with_fixes_that_work(stopped_home):
    var = stopped_home / "var"
    logs = sorted((var / "log").rglob("*.log"))
    assert logs
    var.chmod(0o755)
    (var / "toru.db").chmod(0o644)
    for log in logs:
        log.chmod(0o644)
    rc, lines = doctor(stopped_home)
    assert rc == 1, lines
    text = "\n".join(lines)
    assert f"problem: {var} is accessible by others (mode 0755); fix: chmod 0700 {var}" in text
    assert f"{var / 'toru.db'} is accessible by others (mode 0644)" in text
    assert f"fix: chmod -R go-rwx {var / 'log'}" in text
    # the printed fixes are shell commands that repair the home
    for line in problems(lines):
        fix = line.split("; fix: ", 1)[1]
        assert fix.startswith("chmod "), line
        subprocess.run(fix, shell=True, check=True)
    rc, lines = doctor(stopped_home)
    assert rc == 0 and not problems(lines), lines

    # group access only (a deliberate shared group) is a warning, not a failure
    (var / "toru.db").chmod(0o640)
    rc, lines = doctor(stopped_home)
    assert rc == 0, lines
    assert any(
        x.startswith("warning:") and "toru.db is accessible by its group" in x for x in lines
    )


def test_a_file_that_is_not_a_database(stopped_home):
    db = stopped_home / "var" / "toru.db"
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    before = db.read_bytes()
    rc, lines = doctor(stopped_home)
    assert rc == 1
    assert any(f"{db} is not a SQLite database; fix: restore" in x for x in lines), lines
    assert db.read_bytes() == before  # doctor only reads


def test_a_damaged_database(stopped_home):
    db = stopped_home / "var" / "toru.db"
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big") or 65536
    assert len(data) >= 3 * page
    data[page : 3 * page] = b"\xa5" * (2 * page)  # pages 2 and 3: b-tree pages of the schema
    db.write_bytes(bytes(data))
    rc, lines = doctor(stopped_home)
    assert rc == 1
    assert any(str(db) in x and "restore var/toru.db from a backup" in x for x in lines), lines


@pytest.mark.parametrize(
    "content, says",
    [
        ('{"version": 1, "plugins": {"web-test": {"enab', "does not parse"),
        ("[]", "expected a JSON object, found list"),
        ("null", "expected a JSON object, found NoneType"),
        ('{"version": 1, "plugins": []}', '"plugins" must be an object'),
        ('{"version": 1, "plugins": {"web-test": {"enabled": "yes"}}}', '"enabled" must be'),
        ('{"version": 1, "plugins": {"not an id!": {"enabled": true}}}', "is not a plugin id"),
    ],
)
def test_bad_config_json(stopped_home, content, says):
    state = stopped_home / "plugins" / ".metadata" / "config.json"
    assert state.exists()
    state.write_text(content)
    rc, lines = doctor(stopped_home)
    assert rc == 1
    assert any(str(state) in x and says in x and "; fix: " in x for x in lines), lines


def test_a_set_aside_config_json_is_a_warning(stopped_home):
    kept = stopped_home / "plugins" / ".metadata" / "config.json.corrupt-20261201T120000Z"
    kept.write_text("[]")
    rc, lines = doctor(stopped_home)
    assert rc == 0
    assert any(x.startswith("warning:") and f"set aside as {kept}" in x for x in lines), lines


def test_bind_taken_by_another_program(stopped_home):
    port = free_port()
    listener = socket.create_server(("127.0.0.1", port))
    stop = threading.Event()

    def serve() -> None:  # accepts and hangs up: not an HTTP server, certainly not Toru
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                listener.accept()[0].close()
            except TimeoutError:
                pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        rc, lines = doctor(stopped_home, env={"TORU_BIND": f"127.0.0.1:{port}"})
    finally:
        stop.set()
        t.join()
        listener.close()
    assert rc == 1
    assert any(f"127.0.0.1:{port} is served by a program that is not Toru" in x for x in lines)


def test_nginx_site(made_home, tmp_path):
    home, server = made_home
    shipped = SITE.read_text()
    site = tmp_path / "toru.conf"
    # the shipped site, pointed at the running Toru: nothing to fix
    site.write_text(shipped.replace("unix:/run/toru/web.sock", server.bind))
    rc, lines = doctor(home, "--nginx", str(site))
    assert rc == 0 and not problems(lines), lines
    assert not any("keepalive" in x for x in lines), lines
    # as shipped, it proxies to a Unix socket Toru does not bind here
    rc, lines = doctor(home, "--nginx", str(SITE))
    assert rc == 1
    assert any(
        f"proxies to unix:/run/toru/web.sock but Toru binds {server.bind}" in x for x in lines
    ), lines
    # without upstream keepalive: a warning with the fix
    no_keepalive = re.sub(r"^\s*keepalive\s+\d+;\n", "", shipped, flags=re.M)
    site.write_text(no_keepalive.replace("unix:/run/toru/web.sock", server.bind))
    rc, lines = doctor(home, "--nginx", str(site))
    assert rc == 0
    assert any(x.startswith("warning:") and "has no keepalive" in x for x in lines), lines


def test_runtime_and_config_problems(stopped_home, tmp_path):
    # the configured plugin user does not exist
    toml = stopped_home / "toru.toml"
    toml.write_text(toml.read_text() + '[plugins]\nuser = "toru-no-such-user"\n')
    rc, lines = doctor(stopped_home)
    assert rc == 1
    assert any("plugins.user 'toru-no-such-user' does not exist; fix: useradd" in x for x in lines)
    # uvloop cannot be imported (shadowed by a broken module first on the path)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "uvloop.py").write_text("raise ImportError('broken for the test')\n")
    rc, lines = doctor(stopped_home, env={"PYTHONPATH": str(shadow)})
    assert any("uvloop is not importable (broken for the test)" in x for x in lines), lines
    # less free disk than wanted
    rc, lines = doctor(stopped_home, "--min-free", "900T")
    assert any("MiB free on the file system" in x for x in problems(lines)), lines
    # a toru.toml that does not parse
    toml.write_text("bind = \n")
    rc, lines = doctor(stopped_home)
    assert rc == 1 and lines and "toru.toml" in lines[0], lines


def test_a_gunicorn_without_the_configured_worker_class(stopped_home, tmp_path):
    """An installed gunicorn that lacks the worker class Toru configures (as an older
    gunicorn lacks ``asgi``): the real package, copied without that worker's module."""
    import gunicorn
    from gunicorn.util import load_class

    from toru.doctor import GUNICORN_CONF, literal_settings

    worker = literal_settings(GUNICORN_CONF)["worker_class"]
    module = load_class(worker, section="gunicorn.workers").__module__
    shadow = tmp_path / "shadow"
    shutil.copytree(Path(gunicorn.__file__).parent, shadow / "gunicorn")
    (shadow / Path(*module.split("."))).with_suffix(".py").unlink()
    rc, lines = doctor(stopped_home, env={"PYTHONPATH": str(shadow)})
    assert rc == 1
    assert any(f"gunicorn cannot load worker class {worker!r}" in x for x in lines), lines
