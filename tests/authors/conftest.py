"""Shared by the plugin-author tests: running commands as an author would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests import timing

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # the venv's bin: `toru` and `python` as installed


def author_env() -> dict[str, str]:
    """The author's shell: the venv first on PATH (so `toru` and `python` are Toru's)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORU_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def sh(cmd: str, cwd: Path, timeout: float = timing.WAIT) -> subprocess.CompletedProcess[str]:
    """Run one shell line as typed in a README; fails the test with its output."""
    done = subprocess.run(
        cmd, shell=True, cwd=cwd, env=author_env(), capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"$ {cmd}\n{done.stdout}\n{done.stderr}"
    return done
