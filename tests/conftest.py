"""Fixtures every test tier shares: short homes (Unix socket paths are limited to 107 bytes)
and the example plugins built once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Plugins run as an unprivileged user by default when Toru is root (toru-plugin), and the
# suite's helper plugins run on this interpreter (sys.executable), which that user cannot
# reach where Python lives under /root (pyenv, as here and in CI). So every test not about
# plugin identity runs plugins as the suite's own uid, named explicitly; tests/security
# removes this and runs the shipped default with plugins it writes for the plugin user.
os.environ.setdefault("TORU_PLUGINS_USER", str(os.geteuid()))


@pytest.fixture
def short_home():
    """A fresh, short home directory (socket paths under run/ must stay short)."""
    d = Path(tempfile.mkdtemp(prefix="toru-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def example_plugins() -> dict[str, Path]:
    """Every example built into a session-wide directory: plugin id -> binary path."""
    out = Path(tempfile.mkdtemp(prefix="toru-ex-", dir="/tmp"))
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "build.py"), "--out", str(out)], check=True
    )
    found = {}
    for binary in sorted(out.glob("*.binary")):
        import json

        meta = json.loads(
            subprocess.run(
                [str(binary), "--metadata"], capture_output=True, check=True, timeout=10
            ).stdout
        )
        found[meta["id"]] = binary
    yield found
    shutil.rmtree(out, ignore_errors=True)


@pytest.fixture
def test_output() -> Path:
    """Where tests leave artifacts worth looking at (screenshots, benchmark JSON)."""
    p = ROOT / "test-output"
    p.mkdir(exist_ok=True)
    return p


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under ``make test`` (TORU_NO_SKIP=1) a skip is a failure: every tier needs its real
    components (nginx, Chromium, schemathesis, built examples) installed, not skipped."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TORU_NO_SKIP") == "1":
        report.outcome = "failed"
        report.longrepr = f"skipped under TORU_NO_SKIP=1: {report.longrepr}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """The same for a whole module skipped at import (``pytest.importorskip``)."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("TORU_NO_SKIP") == "1":
        report.outcome = "failed"
        report.longrepr = f"module skipped under TORU_NO_SKIP=1: {report.longrepr}"
