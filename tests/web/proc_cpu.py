"""CPU seconds (utime + stime) of the given pids and all their descendants, by process name:
``python3 tests/web/proc_cpu.py PID...`` (tests/web/measure_modes.sh calls it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def cpu_by_name(roots: list[int]) -> dict[str, float]:
    ticks = os.sysconf("SC_CLK_TCK")
    total: dict[str, float] = {}
    for root in roots:
        for p in _tree(root):
            try:
                fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                name = Path(f"/proc/{p}/comm").read_text().strip()
            except OSError:
                continue
            total[name] = total.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return total


if __name__ == "__main__":
    usage = cpu_by_name([int(a) for a in sys.argv[1:]])
    print(" ".join(f"{k}={v:.2f}" for k, v in sorted(usage.items())))
