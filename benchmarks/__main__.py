"""``python -m benchmarks --smoke | --quick | --full [--target URL --token T] [--out DIR]``.

Prints the summary (both baselines, Toru's routes, ratios, issue 12's targets) first, then
every table. See benchmarks/README.md for what each scenario measures.
"""

from __future__ import annotations

import argparse
import datetime as dt
import signal
import sys
from pathlib import Path

from .runner import ROOT, BenchmarkRun, preset


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Benchmarks of Toru's proxy path."
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--smoke",
        action="store_const",
        dest="mode",
        const="smoke",
        help="a few seconds, every scenario once (for the test suite)",
    )
    mode.add_argument(
        "--quick",
        action="store_const",
        dest="mode",
        const="quick",
        help="3 runs x 3 s per scenario (default)",
    )
    mode.add_argument(
        "--full",
        action="store_const",
        dest="mode",
        const="full",
        help="5 runs x 10 s, plus scale tables and the 1,000,000-request leak check",
    )
    p.add_argument(
        "--target", metavar="URL", help="run the HTTP scenarios against an existing installation"
    )
    p.add_argument("--token", metavar="T", help="API token for --target (toru user token NAME)")
    p.add_argument("--sdk-path", help="path of the SDK-plugin scenario on --target")
    p.add_argument("--raw-path", help="path of the raw-plugin scenario on --target")
    p.add_argument("--out", type=Path, help="output directory (default build/bench/<mode>-<time>)")
    p.add_argument("--runs", type=int, help="runs per scenario (override the mode's)")
    p.add_argument("--duration", type=float, help="seconds per HTTP run (override)")
    p.add_argument("--connections", type=int, help="wrk connections of the main scenarios (16)")
    p.add_argument(
        "--workers",
        type=int,
        help="gunicorn workers for Toru and the baseline (default: toru serve's)",
    )
    p.add_argument(
        "--scale",
        action="store_true",
        help="add the scale tables (concurrency, body size, plugin count)",
    )
    p.add_argument(
        "--leak", type=int, metavar="N", help="leak check with N requests through the supervisor"
    )
    p.add_argument("--no-nginx", action="store_true", help="skip scenario (f)")
    p.add_argument(
        "--worker-class",
        help="the WSGI baseline's gunicorn worker class (default sync), and Toru's when Toru "
        "is a WSGI app (e.g. gthread); the asgi baseline stays asgi",
    )
    p.add_argument("--threads", type=int, help="gunicorn threads per worker (with --worker-class)")
    p.add_argument(
        "--slow-clients", type=int, help="stalled half-header connections in b_toru_sdk_slow (64)"
    )
    p.add_argument(
        "--only", metavar="IDS", help="comma list of scenario ids to measure (servers still start)"
    )
    p.add_argument(
        "--no-compare",
        action="store_true",
        help="skip (h): the web tier alone, plugin answers canned in the worker",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: re-evaluate the targets of a results.json and rewrite it, its "
        "results.md and results.png (after a change to the targets or the tables)",
    )
    p.set_defaults(mode="quick")
    return p  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        return render(args.render)
    if args.target and not args.token:
        print("--target needs --token (an API token: toru user token NAME)", file=sys.stderr)
        return 2
    o = preset(args.mode)
    o.target, o.token = args.target, args.token
    for name in (
        "sdk_path",
        "raw_path",
        "runs",
        "duration",
        "connections",
        "workers",
        "worker_class",
        "threads",
        "slow_clients",
    ):
        v = getattr(args, name)
        if v is not None:
            setattr(o, name, v)
    if args.scale:
        o.scale = True
    if args.leak is not None:
        o.leak_requests = args.leak
    o.nginx = not args.no_nginx
    o.compare = not args.no_compare
    if args.only:
        o.only = tuple(x.strip() for x in args.only.split(",") if x.strip())
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or ROOT / "build" / "bench" / f"{o.mode}-{stamp}"
    exit_on_termination()
    return publish(BenchmarkRun(o).run(), out)


def exit_on_termination() -> None:
    """SIGTERM or SIGHUP (a CI timeout, ``kill``, a closed terminal) unwinds like Ctrl-C, so the
    run stops every server it started (they run in sessions of their own and would outlive
    it). A second signal during that cleanup is ignored."""

    def unwind(signum: int, _frame: object) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, unwind)


def publish(doc: dict, out: Path) -> int:
    """Write the run's files into ``out`` and print it (the summary first)."""
    from .report import markdown, write_all

    paths = write_all(doc, out)
    print(markdown(doc))
    for kind, path in paths.items():
        print(f"{kind}: {path}", file=sys.stderr)
    return 0


def render(path: Path) -> int:
    """``--render results.json``: the targets evaluated again, every file written again."""
    import json

    from .targets import evaluate

    doc = json.loads(path.read_text())
    doc["targets"] = evaluate(doc)
    return publish(doc, path.parent)


if __name__ == "__main__":
    sys.exit(main())
