"""Fixtures of the SDK tier: a misbehaving plugin executable by mode."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def mode_plugin(tmp_path: Path, script: str) -> Callable[[str], Path]:
    """A factory of ``<mode>.binary`` executables running ``tests/sdk/<script> <mode>``."""

    def make(mode: str) -> Path:
        exe = tmp_path / f"{mode}.binary"
        exe.write_text(f'#!/bin/sh\nexec {sys.executable} {HERE / script} {mode} "$@"\n')
        exe.chmod(0o755)
        return exe

    return make


@pytest.fixture
def misbehaving(tmp_path: Path) -> Callable[[str], Path]:
    """An executable running misbehaving_plugin.py in the given mode."""
    return mode_plugin(tmp_path, "misbehaving_plugin.py")


@pytest.fixture
def author_plugin(tmp_path: Path) -> Callable[[str], Path]:
    """An executable running author_errors_plugin.py in the given mode."""
    return mode_plugin(tmp_path, "author_errors_plugin.py")


@pytest.fixture
def sdk_plugin_exe(tmp_path: Path) -> Path:
    """tests/sdk/sdk_plugins.py:SlowFast as an executable, the way the host runs a plugin."""
    exe = tmp_path / "slow-fast.binary"
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
        "from tests.sdk.sdk_plugins import SlowFast; from toru_plugin_api import run; run(SlowFast())"
    )
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} -c {shlex.quote(code)} "$@"\n')
    exe.chmod(0o755)
    return exe
