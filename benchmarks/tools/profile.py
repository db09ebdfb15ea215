"""Where the time goes on the proxy path: py-spy on the supervisor, a worker and the plugin
while wrk drives scenario (b).

    python -m benchmarks.tools.profile [--duration 10] [--connections 16] [--out DIR]

Writes ``profile.md`` (top frames by own time and by inclusive time per process) and the raw
py-spy stacks (``<role>.txt``, loadable in speedscope or flamegraph.pl). py-spy samples
wall-clock stacks of running threads; ``--idle`` is off, so time blocked in a syscall that
py-spy sees as idle is not counted.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from ..procstat import CpuMeter, cpu_split, descendants, role_of
from ..runner import SDK_ID, SDK_PATH, BenchmarkRun, preset
from ..stack import ROOT
from ..wrk import run_wrk


def summarize(raw: Path, top: int = 25) -> str:
    """Markdown: the ``top`` frames by own samples and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for f in set(frames):
            incl[f] += count
    if not total:
        return "_no samples_\n"
    lines = [f"{total} samples", "", "| own % | frame |", "|---:|---|"]
    lines += [f"| {c / total * 100:.1f} | `{f[:140]}` |" for f, c in own.most_common(top)]
    lines += ["", "| inclusive % | frame |", "|---:|---|"]
    skip = ("<module>", "_run_code", "_run_module_as_main", "run (", "main (")
    shown = 0
    for f, c in incl.most_common():
        if shown >= top:
            break
        if f.startswith(skip) or c == total:
            continue
        lines.append(f"| {c / total * 100:.1f} | `{f[:140]}` |")
        shown += 1
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m benchmarks.tools.profile", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "bench" / "profile")
    ap.add_argument("--path", default=SDK_PATH, help="what wrk asks for (MIB_PATH: 1 MiB)")
    a = ap.parse_args(argv)
    pyspy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    a.out.mkdir(parents=True, exist_ok=True)
    run = BenchmarkRun(preset("quick"))
    try:
        plugins = run.build_plugins()
        toru = run.start_toru("h1", {SDK_ID: plugins[SDK_ID]})
        url = toru.url + a.path
        before = {p: sum(cpu_split(p) or (0, 0)) for p in descendants(toru.pid)}
        run_wrk(url, connections=a.connections, duration=2, token=toru.token)  # warm-up
        busy: dict[str, tuple[int, int]] = {}  # role -> (CPU ticks in the warm-up, pid)
        for p, ticks in before.items():
            used = sum(cpu_split(p) or (0, 0)) - ticks
            role = role_of(p)
            if used >= busy.get(role, (-1, 0))[0]:
                busy[role] = (used, p)
        procs = {role: p for role, (_, p) in busy.items()}  # the busiest of each role
        meter = CpuMeter([toru.pid])
        result: dict[str, object] = {}

        def load() -> None:
            result["wrk"] = run_wrk(
                url, connections=a.connections, duration=a.duration + 2, token=toru.token
            )

        t = threading.Thread(target=load)
        meter.start()
        t.start()
        spies = {}
        for role in ("supervisor", "web", "plugin"):
            pid = procs.get(role)
            if pid:
                spies[role] = subprocess.Popen(
                    [pyspy, "record", "-p", str(pid), "-d", str(a.duration), "-r", str(a.rate), "-f", "raw", "-o", str(a.out / f"{role}.txt")],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
        for p in spies.values():
            p.wait()
        t.join()
        cpu = meter.stop()
        w = result["wrk"]
        parts = [
            "# Profile of scenario (b)",
            "",
            f"`python -m benchmarks.tools.profile --duration {a.duration} --connections {a.connections}`: "
            f"{w.rps:.0f} req/s, p50 {w.latency_us['p50'] / 1000:.2f} ms, CPU {cpu / w.requests * 1e6:.0f} µs/request "
            "(" + ", ".join(f"{r} {c / w.requests * 1e6:.0f}" for r, c in sorted(meter.by_role.items())) + ").",
            "",
        ]  # fmt: skip
        for role in spies:
            parts += [f"## {role} (pid {procs[role]})", "", summarize(a.out / f"{role}.txt")]
        (a.out / "profile.md").write_text("\n".join(parts))
        print("\n".join(parts))
    finally:
        run.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
