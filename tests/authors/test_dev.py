"""``toru plugin dev``, for real: a generated plugin is built, served and answers; a change
of its source is rebuilt and the new version answers; SIGINT stops everything."""

from __future__ import annotations

import http.cookiejar
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests import timing
from tests.servers import free_port

from .conftest import author_env, sh

# Builds (cargo, zipapps) and a whole toru serve per test: more than the suite's 300 s on a
# loaded machine, so the budget scales like every other wait here.
pytestmark = pytest.mark.timeout(timing.scaled(400))

EDIT = {  # (file, text in the generated source, the author's edit)
    "python": ("dev_python_plugin/plugin.py", 'from Dev Python"', 'from Dev Python v2"'),
    "node": ("plugin.js", "from Dev Node`", "from Dev Node v2`"),
}
NAME = {"python": "Dev Python", "node": "Dev Node"}


def _wait(pred, what: str, proc: subprocess.Popen, out: Path):
    deadline = time.monotonic() + timing.WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"toru plugin dev exited {proc.returncode}:\n{out.read_text()}")
        try:
            value = pred()
        except OSError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not seen within {timing.WAIT} s:\n{out.read_text()}")


def _leftovers(marker: str) -> list[str]:
    """Processes whose command line or environment mentions the dev home."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            blob = (d / "cmdline").read_bytes() + (d / "environ").read_bytes()
            state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in blob and state != "Z":
            found.append(f"{d.name}: {(d / 'cmdline').read_bytes()!r}")
    return found


@pytest.mark.parametrize("lang", ["python", "node"])
def test_dev_loop_rebuilds_restarts_and_stops_clean(tmp_path: Path, lang: str) -> None:
    plugin_id = f"dev-{lang}"
    sh(f"toru plugin new {plugin_id} --lang {lang}", tmp_path)
    src = tmp_path / plugin_id
    port = free_port()
    out = tmp_path / "dev.out"
    home = src / ".toru-dev"
    env = {**author_env(), **timing.product_env()}
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            ["toru", "plugin", "dev", ".", "--bind", f"127.0.0.1:{port}", "--interval", "0.2"],
            cwd=src,
            env=env,
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait(lambda: "[dev] plugin:" in out.read_text(), "the ready banner", proc, out)
        text = out.read_text()
        home = Path(text.split("[dev] Toru is serving ", 1)[1].split(" (server output", 1)[0])
        password = (home / "var" / "dev-admin-password").read_text().strip()
        assert f"UI:       http://127.0.0.1:{port}/" in text
        assert f"password {password}" in text

        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        login = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/auth/login",
            data=json.dumps({"username": "admin", "password": password}).encode(),
            headers={"Content-Type": "application/json"},
        )
        opener.open(login, timeout=timing.HTTP).read()

        def message() -> str | None:
            url = f"http://127.0.0.1:{port}/api/plugins/route/{plugin_id}/"
            with opener.open(url, timeout=timing.HTTP) as r:
                return json.loads(r.read())["message"] if r.status == 200 else None

        assert _wait(message, "the first version", proc, out) == f"Hello from {NAME[lang]}"
        assert _wait(lambda: "initialised" in out.read_text(), "the plugin's log", proc, out)

        rel, old, new = EDIT[lang]
        source = src / rel
        code = source.read_text()
        assert old in code
        # Every answer from the save until the new version serves: the swap is the
        # supervisor's zero-downtime upgrade, so none may fail (before, the dev loop disabled
        # the plugin first: 404/503 until the new one was up).
        answers: list[str] = []

        def answer() -> str:
            try:
                answers.append(message() or "no message")
            except urllib.error.HTTPError as exc:
                answers.append(f"HTTP {exc.code}")
            except OSError as exc:
                answers.append(f"{type(exc).__name__}: {exc}")
            return answers[-1]

        source.write_text(code.replace(old, new))
        want = f"Hello from {NAME[lang]} v2"
        _wait(lambda: answer() == want, "the new version", proc, out)
        assert "[dev] restarted" in out.read_text()
        assert set(answers) <= {f"Hello from {NAME[lang]}", want}, answers
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timing.WAIT)
    assert code == 0, out.read_text()
    time.sleep(timing.scaled(0.5))
    assert _leftovers(str(home)) == []
    if not home.is_relative_to(tmp_path):  # a short home in /tmp (a deep tmp_path)
        shutil.rmtree(home, ignore_errors=True)
