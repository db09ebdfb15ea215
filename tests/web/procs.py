"""Process-tree helpers for the web tier's tests (read straight from /proc)."""

from __future__ import annotations

import os
import time
from pathlib import Path


def _ppid_map() -> dict[int, int]:
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # comm may contain spaces/parens: split after the last ')'
        fields = stat[stat.rfind(")") + 2 :].split()
        if fields[0] == "Z":  # zombies are gone for our purposes
            continue
        out[int(d.name)] = int(fields[1])
    return out


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    ppids = _ppid_map()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        nxt = {p for p, pp in ppids.items() if pp in frontier and p not in found}
        found |= nxt
        frontier = nxt
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children(pid: int) -> set[int]:
    return {p for p, pp in _ppid_map().items() if pp == pid}


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2 :].split()[0] != "Z"


def wait_gone(pids: set[int], timeout: float = 20.0) -> set[int]:
    """Wait until none of ``pids`` is alive; returns the ones still alive at the deadline."""
    deadline = time.monotonic() + timeout
    left = {p for p in pids if alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if alive(p)}
    return left


def find_child(pid: int, needle: str) -> int | None:
    """The direct child of ``pid`` whose command line contains ``needle``."""
    for c in children(pid):
        if needle in cmdline(c):
            return c
    return None


def kill_all(pids: set[int]) -> None:
    """Clean-up for a failed test: SIGKILL whatever is still alive."""
    for p in pids:
        try:
            os.kill(p, 9)
        except (ProcessLookupError, PermissionError):
            pass


def poll(fn, timeout: float = 20.0, interval: float = 0.1):
    """Call ``fn`` until it returns a truthy value; returns it (or the last value)."""
    deadline = time.monotonic() + timeout
    value = fn()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = fn()
    return value
