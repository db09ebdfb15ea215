"""CPU time and memory of a process tree from /proc (Linux), without psutil.

CPU per request is measured as the growth of utime+stime of every process under a root
(the server's master, its workers, the supervisor, the plugins) across one load run.
"""

from __future__ import annotations

import os
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = raw[raw.rindex(")") + 2 :].split()
    return rest  # rest[0] is field 3 (state)


def _ppid_map() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat_fields(int(entry))
            if f is not None:
                out[int(entry)] = int(f[1])
    return out


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for pid, ppid in _ppid_map().items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of one process in clock ticks (None when it is gone)."""
    t = cpu_split(pid)
    return None if t is None else t[0] + t[1]


def cpu_split(pid: int) -> tuple[int, int] | None:
    """(utime, stime) of one process in clock ticks (None when it is gone)."""
    f = _stat_fields(pid)
    if f is None:
        return None
    return int(f[11]), int(f[12])  # fields 14 and 15


def rss_bytes(pid: int) -> int | None:
    """Resident set size of one process."""
    f = _stat_fields(pid)
    if f is None:
        return None
    return int(f[21]) * _PAGE  # field 24


def cmdline(pid: int) -> str:
    """The process's command line, for picking the supervisor out of a tree."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def role_of(pid: int) -> str:
    """Which part of the stack a process is, from its command line (for CPU breakdowns)."""
    cmd = cmdline(pid)
    if ".binary" in cmd or "floor" in cmd:
        return "plugin"
    if "toru.cli supervisor" in cmd or "toru supervisor" in cmd:
        return "supervisor"
    if "gunicorn" in cmd:
        return "web"
    if "nginx" in cmd:
        return "nginx"
    if "toru.cli serve" in cmd or "toru serve" in cmd:
        return "serve"
    return "other"


class CpuMeter:
    """CPU seconds used by the trees under some roots between ``start()`` and ``stop()``.

    Processes that appear during the run count in full; processes that die during it lose
    their last interval (servers under test do not fork per request, so this stays exact).
    ``by_role`` (after ``stop()``) splits the total by ``role_of``.
    """

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self._before: dict[int, tuple[int, int]] = {}
        self.by_role: dict[str, float] = {}
        self.sys_by_role: dict[str, float] = {}

    def _snapshot(self) -> dict[int, tuple[int, int]]:
        snap: dict[int, tuple[int, int]] = {}
        for root in self.roots:
            for pid in descendants(root):
                t = cpu_split(pid)
                if t is not None:
                    snap[pid] = t
        return snap

    def start(self) -> None:
        """Remember the current counters."""
        self._before = self._snapshot()

    def stop(self) -> float:
        """CPU seconds since ``start()``."""
        after = self._snapshot()
        roles: dict[str, int] = {}
        sys_roles: dict[str, int] = {}
        for pid, (u, s) in after.items():
            role = role_of(pid)
            bu, bs = self._before.get(pid, (0, 0))
            roles[role] = roles.get(role, 0) + max(0, u - bu) + max(0, s - bs)
            sys_roles[role] = sys_roles.get(role, 0) + max(0, s - bs)
        self.by_role = {r: t / _TICKS for r, t in roles.items()}
        self.sys_by_role = {r: t / _TICKS for r, t in sys_roles.items()}
        return sum(roles.values()) / _TICKS


def tagged(run_dir: str) -> dict[int, str]:
    """pid -> command of every live process of the benchmark run ``run_dir``: they inherit
    ``TORU_BENCH_RUN=<run_dir>``, except plugins, which the supervisor starts with a clean
    environment and whose path names the run. This process is never one of them."""
    needle = f"TORU_BENCH_RUN={run_dir}\0".encode()
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            env = Path(f"/proc/{entry}/environ").read_bytes() + b"\0"
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if needle in env or run_dir in cmd:
            found[int(entry)] = cmd
    return found
