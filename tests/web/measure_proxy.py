"""Measure a plugin route against a bare Falcon route in the same ``toru serve`` (same run).

    .venv/bin/python -m tests.web.measure_proxy [--seconds 10] [--connections 16] [--workers N]

Starts one server with hello-python, then runs wrk (``--latency``) against ``/livez`` (a bare
Falcon responder: no auth, no supervisor) and ``/api/plugins/route/hello/`` (bearer auth,
worker -> supervisor -> plugin and back), one after the other against the same processes,
and prints requests/s with p50/p99. Results also go to test-output/proxy-vs-bare.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.servers import ROOT, ToruServer


def _wrk(url: str, header: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", header, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50": re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1),
        "p99": re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--plugin", default=str(ROOT / "build" / "plugins" / "hello-python.binary"))
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="toru-m-", dir="/tmp"))
    kw = {"workers": args.workers} if args.workers else {}
    server = ToruServer(
        home,
        plugins=[Path(args.plugin)],
        enable=["hello-python"],
        env={"TORU_GUNICORN_LOGLEVEL": "warning"},
        **kw,
    )
    results = {}
    try:
        server.start()
        cookie, csrf = server.login()
        _, token = server.json("POST", "/api/auth/tokens", {"name": "m"}, cookie=cookie, csrf=csrf)
        header = f"Authorization: Bearer {token['token']}"
        for name, path in (("bare", "/livez"), ("plugin", "/api/plugins/route/hello/")):
            results[name] = _wrk(server.url + path, header, args.seconds, args.connections)
            r = results[name]
            print(
                f"{name:7s} {path:28s} {r['requests_per_s']:9.1f} req/s  "
                f"p50 {r['p50']:>8s}  p99 {r['p99']:>8s}  non-2xx {r['non_2xx']}",
                flush=True,
            )
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
    out = ROOT / "test-output"
    out.mkdir(exist_ok=True)
    (out / "proxy-vs-bare.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
