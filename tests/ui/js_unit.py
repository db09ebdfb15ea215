"""Run a snippet of ES-module JavaScript under Node for the UI's unit tests (no browser)."""

from __future__ import annotations

import shutil
import subprocess

NODE = shutil.which("node")


def run_module(script: str) -> str:
    """``script``'s stdout; it may ``import`` the webapp's modules by file URL."""
    assert NODE is not None, "node is not installed"
    out = subprocess.run(
        [NODE, "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return out.stdout
