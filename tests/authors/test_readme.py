"""docs/plugins/README.md's five-minute path, run as written from a fresh clone: for each
language the shell block under its heading (new, build, check, test, dev, install).

The clone is of the committed tree (``git clone`` of this repository), so a template or doc
that exists only in a working copy fails here. ``toru`` and ``python`` on PATH run the
clone's code with this venv's interpreter; ``toru plugin dev .`` is started, waited for until
it prints its banner, and stopped with SIGINT.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests import timing
from tests.servers import free_port

from .conftest import ROOT

# Builds (cargo, zipapps) and a whole toru serve per test: more than the suite's 300 s on a
# loaded machine, so the budget scales like every other wait here.
pytestmark = pytest.mark.timeout(timing.scaled(400))

HEADINGS = {"python": "### Python", "node": "### Node.js", "rust": "### Rust"}
DEV_LINE = "toru plugin dev ."
PRELUDE = r"""set -euo pipefail
dev_smoke() {
  toru plugin dev . --bind "127.0.0.1:$DEV_PORT" > "$DEV_OUT" 2>&1 &
  local pid=$! i
  for i in $(seq 1 "$DEV_POLLS"); do
    grep -q '^\[dev\] plugin:' "$DEV_OUT" && break
    kill -0 "$pid" 2>/dev/null || { cat "$DEV_OUT"; return 1; }
    sleep 0.2
  done
  grep -q '^\[dev\] plugin:' "$DEV_OUT" || { cat "$DEV_OUT"; return 1; }
  kill -INT "$pid"
  wait "$pid"
}
"""


def readme_block(heading: str) -> list[str]:
    """The lines of the first ```sh block after ``heading`` in the five-minute section."""
    text = (ROOT / "docs" / "plugins" / "README.md").read_text()
    section = text.split("## Five minutes to a running plugin", 1)[1].split("\n## ", 1)[0]
    after = section.split(heading + "\n", 1)[1]
    block = re.search(r"```sh\n(.*?)```", after, re.S)
    assert block, f"no sh block under {heading}"
    return [ln for ln in block.group(1).splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("clone") / "toru"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True, timeout=timing.WAIT)
    return dest


def _shims(clone: Path, bindir: Path) -> None:
    """``toru`` and ``python`` as an installed Toru would give them, from the clone."""
    bindir.mkdir()
    for name, args in (("toru", "-m toru.cli"), ("python", "")):
        shim = bindir / name
        shim.write_text(f'#!/bin/sh\nPYTHONPATH="{clone}" exec "{sys.executable}" {args} "$@"\n')
        shim.chmod(0o755)


@pytest.mark.parametrize("lang", sorted(HEADINGS))
def test_five_minute_path(tmp_path: Path, clone: Path, lang: str) -> None:
    lines = readme_block(HEADINGS[lang])
    assert DEV_LINE in lines and lines[0].startswith("toru plugin new")
    script = PRELUDE + "\n".join("dev_smoke" if ln == DEV_LINE else ln for ln in lines) + "\n"
    _shims(clone, tmp_path / "bin")
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORU_")}
    env.pop("PYTHONPATH", None)
    env.update(timing.product_env())
    env.update(
        HOME=str(tmp_path),  # ~/toru-home lands in the test's directory
        PATH=f"{tmp_path / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        DEV_PORT=str(free_port()),
        DEV_OUT=str(tmp_path / "dev.out"),
        DEV_POLLS=str(int(timing.WAIT / 0.2)),
        CARGO_HOME=os.environ.get("CARGO_HOME", str(Path.home() / ".cargo")),
        RUSTUP_HOME=os.environ.get("RUSTUP_HOME", str(Path.home() / ".rustup")),
    )
    where = subprocess.run(
        [
            "python",
            "-c",
            "import toru_plugin_api, toru; print(toru_plugin_api.__file__, toru.__file__)",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert all(p.startswith(str(clone)) for p in where), where
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timing.scaled(600),
    )
    report = f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    dev_out = (tmp_path / "dev.out").read_text() if (tmp_path / "dev.out").exists() else ""
    for line in dev_out.splitlines():  # a short dev home in /tmp (a deep tmp_path)
        if line.startswith("[dev] Toru is serving /tmp/toru-dev-"):
            shutil.rmtree(line.split()[4], ignore_errors=True)
    assert done.returncode == 0, report
    plugin_id = lines[0].split()[3]
    assert "Result: PASS" in done.stdout, report
    assert (tmp_path / "toru-home" / "plugins" / f"{plugin_id}.binary").is_file()
    listed = [ln for ln in done.stdout.splitlines() if ln.startswith(plugin_id + " ")]
    assert listed and " yes " in listed[-1], report  # installed and enabled
