"""The benchmark's smoke mode runs in the suite: valid JSON with every scenario, never timings.

``python -m benchmarks --smoke`` starts its own baseline gunicorn, two ``toru serve``
instances, nginx and a standalone plugin, runs every scenario once for about a second and
stops everything; this test checks the output's shape and that nothing is left running.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from benchmarks.plugins.bench_sdk import body_of_size, plugin_id_from_argv
from benchmarks.procstat import descendants, tagged
from benchmarks.report import markdown, summary
from benchmarks.slow_clients import SlowClients
from benchmarks.stack import BaselineServer
from benchmarks.targets import evaluate, rps_ratio
from benchmarks.wrk import parse_output
from tests.servers import shipped_nginx_conf

from .. import timing

ROOT = Path(__file__).resolve().parents[2]
CORE = [
    "a_sync",
    "a_asgi",
    "b_toru_sdk",
    "b_toru_sdk_slow",
    "c_toru_raw",
    "a_sync_c1",
    "a_asgi_c1",
    "b_toru_sdk_c1",
    "b_toru_sdk_c64",
    "a_sync_1m",
    "a_asgi_1m",
    "b_toru_sdk_1m",
    "a_sync_1mpost",
    "a_asgi_1mpost",
    "b_toru_sdk_1mpost",
    "f_nginx_sdk",
    "h_app_only",
    "p_one_hop",
    "p_one_hop_sdk",
    "d_floor_seq",
    "d_floor_32",
    "e_hop_seq",
    "e_hop_32",
    "d_minimal_32",
    "e_hop_32_minimal",
    "e_client_seq",
]
METRICS = ["rps", "p50_us", "p90_us", "p99_us", "max_us", "cpu_us_per_request"]


def _leftovers(run_dir: str, wait: float = 10.0) -> list[str]:
    """Processes of one benchmark run still alive after giving exiting ones ``wait`` s
    (``procstat.tagged``: another run going on in parallel is not counted)."""
    deadline = time.monotonic() + wait
    while (found := tagged(run_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [f"{pid}: {cmd}" for pid, cmd in found.items()]


@pytest.mark.nginx
def test_smoke_mode_writes_every_scenario(tmp_path: Path, test_output: Path) -> None:
    out = tmp_path / "bench"
    cp = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    (test_output / "bench-smoke.log").write_text(cp.stderr + cp.stdout)
    assert cp.returncode == 0, cp.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    (test_output / "bench-smoke.json").write_text(json.dumps(doc, indent=2))
    assert doc["schema"] == "toru-bench/1"
    assert doc["mode"] == "smoke"
    assert set(doc["scenarios"]) == set(CORE)
    for sid in CORE:
        sc = doc["scenarios"][sid]
        assert sc["error"] is None, (sid, sc["error"])
        assert len(sc["runs"]) == 1, sid
        assert sc["errors"] == 0, (sid, [r.get("error_detail") for r in sc["runs"]])
        if sid == "b_toru_sdk_slow":
            # A sync web tier serves nothing while 64 clients stall it: no request count to
            # demand, but the slow clients were really there.
            assert sc["runs"][0]["slow_opened"] >= 64, sc["runs"]
            continue
        assert sc["requests"] > 0, sid
        for key in METRICS:
            assert set(sc[key]) == {"median", "min", "max", "n"}, (sid, key)
    assert doc["config"]["toru_worker_class"] in ("sync", "gthread", "asgi")
    ids = {t["id"] for t in doc["targets"]}
    assert {
        "sdk_vs_asgi",
        "sdk_vs_sync",
        "one_conn_vs_asgi",
        "slow_clients",
        "large_answers",
        "added_cpu",
        "added_latency_c1",
        "hop_p50",
        "hop_p99",
        "hop_throughput",
        "no_convoy",
    } <= ids
    for t in doc["targets"]:
        assert set(t) == {"id", "text", "value", "unit", "op", "threshold", "met", "detail"}
    md = (out / "results.md").read_text()
    assert md.startswith("# Toru benchmark")
    # the summary comes first: right under the title, before the full tables
    assert md.index("| target (issue 12) |") < md.index("## Scenarios")
    # the chart (matplotlib: the bench extra, and the test extra so that this runs)
    assert (out / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cp.stdout.startswith(md.split("\n", 1)[0])
    # Every process the run started is gone.
    assert doc["config"]["workdir"].startswith("/tmp/tb-")
    assert _leftovers(doc["config"]["workdir"]) == []
    assert doc["reaped"] == []  # every server stopped on its own, none had to be killed


def test_wrk_output_parsing() -> None:
    text = (
        "Running 1s test @ http://x\n"
        'BENCH_JSON {"requests":10,"duration_us":2000000,"bytes":1,"errors":{"connect":0,"read":1,'
        '"write":0,"status":2,"timeout":0},"latency_us":{"min":1,"mean":2.5,"stdev":1.0,"p50":2,'
        '"p90":3,"p99":4,"p999":5,"max":6}}\n'
    )
    r = parse_output(text)
    assert r.requests == 10
    assert r.rps == 5.0
    assert r.error_count == 3
    assert r.latency_us["p99"] == 4.0


def test_bench_plugin_bodies_and_ids() -> None:
    for n in (100, 10_240, 1_048_576):
        body = body_of_size(n)
        assert len(body) == n
        assert json.loads(body)["message"] == "hello"
    assert plugin_id_from_argv("/x/plugins/bench-sdk-07.binary") == "bench-sdk-07"
    assert plugin_id_from_argv("/x/plugins/evil..binary") == "bench-sdk"


def test_nginx_config_and_empty_report(tmp_path: Path) -> None:
    conf = shipped_nginx_conf(tmp_path, 12345, "/tmp/tb-x/web.sock").read_text()
    assert "server unix:/tmp/tb-x/web.sock fail_timeout=0;" in conf
    assert "listen 127.0.0.1:12345;" in conf
    assert "keepalive 32;" in conf  # the shipped site's upstream keep-alive, not a copy of it
    doc = {
        "schema": "toru-bench/1",
        "mode": "smoke",
        "started_at": "t",
        "command": "c",
        "machine": {"cpus": 2, "cpu_model": "m", "memory_mb": 1, "kernel": "k", "python": "p"},
        "config": {
            "connections": 16,
            "workers": 4,
            "worker_class": "sync",
            "runs": 1,
            "duration_s": 1,
            "socket_duration_s": 1,
        },
        "scenarios": {},
    }
    doc["targets"] = evaluate(doc)
    assert all(t["met"] is None for t in doc["targets"])
    assert "Targets" in markdown(doc)


def test_target_mode_measures_an_existing_installation(
    tmp_path: Path, example_plugins: dict[str, Path], test_output: Path
) -> None:
    """``--target URL --token T``: the HTTP scenarios against a Toru this test started."""
    from tests.servers import ToruServer

    home = Path(tempfile.mkdtemp(prefix="tb-target-", dir="/tmp"))
    srv = ToruServer(
        home,
        plugins=[example_plugins["hello-python"], example_plugins["raw-python"]],
        enable=["hello-python", "raw-python"],
        workers=2,
    )
    try:
        srv.start()
        cookie, csrf = srv.login()
        status, _, body = srv.request(
            "POST", "/api/auth/tokens", {"name": "bench"}, cookie=cookie, csrf=csrf
        )
        assert status == 201, body
        token = json.loads(body)["token"]
        out = tmp_path / "target"
        cp = subprocess.run(
            [
                sys.executable, "-m", "benchmarks", "--smoke", "--target", srv.url,
                "--token", token, "--sdk-path", "/api/plugins/route/hello/",
                "--raw-path", "/api/plugins/route/raw/", "--out", str(out),
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        (test_output / "bench-target.log").write_text(cp.stderr + cp.stdout)
        assert cp.returncode == 0, cp.stderr[-3000:]
        doc = json.loads((out / "results.json").read_text())
        assert doc["config"]["target"] == srv.url
        for sid in ("b_toru_sdk", "c_toru_raw", "b_toru_sdk_c1", "b_toru_sdk_c64"):
            sc = doc["scenarios"][sid]
            assert sc["error"] is None and sc["requests"] > 0 and sc["errors"] == 0, sid
        assert "a_sync" not in doc["scenarios"]  # a local run's scenario
        # a wrong token is a run with errors, not a crash or a silent success
        bad = subprocess.run(
            [
                sys.executable, "-m", "benchmarks", "--smoke", "--target", srv.url,
                "--token", "toru_wrong", "--sdk-path", "/api/plugins/route/hello/",
                "--out", str(tmp_path / "bad"),
            ],
            cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        bad_doc = json.loads((tmp_path / "bad" / "results.json").read_text())
        assert bad_doc["scenarios"]["b_toru_sdk"]["errors"] > 0 or bad.returncode != 0
    finally:
        srv.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_baselines_run_the_wsgi_app_on_wsgi_workers_and_the_asgi_twin_on_asgi(
    tmp_path: Path,
) -> None:
    gthread = BaselineServer(tmp_path, 4, "gthread", threads=4).command()
    assert gthread[-1] == "benchmarks.baseline_app:application"
    assert gthread[gthread.index("--threads") + 1] == "4"
    asgi = BaselineServer(tmp_path, 4, "asgi").command()
    assert asgi[-1] == "benchmarks.baseline_app:asgi_application"
    assert asgi[asgi.index("--worker-class") + 1] == "asgi"
    assert asgi[asgi.index("--asgi-loop") + 1] == "uvloop"


def test_slow_clients_stall_and_are_reopened_when_the_server_closes_them() -> None:
    """Against a real listener: first the connections stall (nothing read back), then a
    server that closes every connection it accepts gets them opened again."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    port = lsock.getsockname()[1]
    slow = SlowClients("127.0.0.1", port, 8).start()
    try:
        assert slow.opened == 8 and slow.closed_by_server == 0
        accepted = [lsock.accept()[0] for _ in range(8)]
        for conn in accepted:
            conn.settimeout(5)
            assert conn.recv(100).startswith(b"GET ")  # a partial header, never its end
            conn.close()
        deadline = time.monotonic() + 10
        while slow.closed_by_server < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stats = slow.stop()
        lsock.close()
    assert stats["slow_closed_by_server"] >= 8
    assert stats["slow_opened"] >= 16  # every closed one was opened again


def test_summary_reports_every_toru_row_against_both_baselines() -> None:
    def sc(sid: str, rps: float) -> dict:
        med = lambda v: {"median": v, "min": v, "max": v, "n": 1}  # noqa: E731
        return {"id": sid, "label": sid, "kind": "http", "rps": med(rps), "p50_us": med(1000.0),
                "p99_us": med(2000.0), "cpu_us_per_request": med(100.0), "runs": []}  # fmt: skip

    rows = {"a_sync": 400, "a_asgi": 1600, "b_toru_sdk": 1200, "b_toru_sdk_slow": 1140,
            "c_toru_raw": 960, "a_asgi_1m": 100, "b_toru_sdk_1m": 40}  # fmt: skip
    doc = {
        "config": {"connections": 16, "slow_clients": 64, "toru_worker_class": "asgi"},
        "scenarios": {k: sc(k, v) for k, v in rows.items()},
    }
    text = summary(doc)
    b_row = next(line for line in text.splitlines() if line.startswith("| b_toru_sdk |"))
    assert "| 1200 | 0.75 | 3.00 |" in b_row
    big = next(line for line in text.splitlines() if line.startswith("| b_toru_sdk_1m |"))
    assert "| 40 | 0.40 | - |" in big  # against the 1 MiB asgi baseline; no sync one ran
    met = {t["id"]: t["met"] for t in evaluate(doc)}
    assert met["sdk_vs_asgi"] is True  # 0.75 >= 0.75
    assert met["sdk_vs_sync"] is True  # 3.0 >= 2.0
    assert met["one_conn_vs_asgi"] is True  # 0.60 >= 0.60
    assert met["slow_clients"] is True  # a 5% drop
    assert met["large_answers"] is False  # 0.40 < 0.5
    assert met["no_convoy"] is None  # not measured


def test_ratios_pair_the_rounds_so_drift_between_rounds_cancels() -> None:
    """Rounds 1 and 2 give b/a = 0.5, round 3 (load on the machine as b ran) 0.2: the paired
    median is 0.5, where the median of b over the median of a would say 0.2."""

    def sc(sid: str, rps: list[float]) -> dict:
        med = {"median": sorted(rps)[len(rps) // 2], "min": min(rps), "max": max(rps), "n": 3}
        return {"id": sid, "kind": "http", "rps": med, "runs": [{"rps": r} for r in rps]}

    doc = {"scenarios": {"a_asgi": sc("a_asgi", [4000, 1000, 3000]),
                         "b_toru_sdk": sc("b_toru_sdk", [2000, 500, 600])}}  # fmt: skip
    assert rps_ratio(doc, "b_toru_sdk", "a_asgi") == 0.5


def test_render_rewrites_a_run_from_its_json(tmp_path: Path) -> None:
    """``--render results.json`` measures nothing: targets evaluated again, files rewritten."""
    med = lambda v: {"median": v, "min": v, "max": v, "n": 1}  # noqa: E731
    doc = {
        "schema": "toru-bench/1", "mode": "quick", "started_at": "t", "command": "c",
        "machine": {"cpus": 2, "cpu_model": "m", "memory_mb": 1, "kernel": "k", "python": "p"},
        "config": {"connections": 16, "workers": 4, "worker_class": "sync", "runs": 1,
                   "duration_s": 3, "socket_duration_s": 2, "toru_worker_class": "asgi"},
        "scenarios": {sid: {"id": sid, "label": sid, "kind": "http", "group": "core",
                            "connections": 16, "rps": med(rps), "p50_us": med(1000.0),
                            "p99_us": med(2000.0), "max_us": med(3000.0),
                            "cpu_us_per_request": med(100.0), "errors": 0, "runs": []}
                      for sid, rps in (("a_asgi", 1600.0), ("b_toru_sdk", 1300.0))},
        "targets": [],
    }  # fmt: skip
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    cp = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--render", str(path)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert cp.returncode == 0, cp.stderr
    met = {t["id"]: t["met"] for t in json.loads(path.read_text())["targets"]}
    assert met["sdk_vs_asgi"] is True  # 1300 / 1600 = 0.81
    assert (tmp_path / "results.md").read_text().startswith("# Toru benchmark")
    assert cp.stdout.startswith("# Toru benchmark")


def _run_dir_of(pid: int) -> str | None:
    """The run's work directory, from the environment of one of its servers."""
    for child in descendants(pid):
        try:
            env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for var in env:
            if var.startswith(b"TORU_BENCH_RUN="):
                return var.split(b"=", 1)[1].decode()
    return None


def test_sigterm_in_the_middle_of_a_run_stops_every_server(test_output: Path) -> None:
    """A run killed with SIGTERM (a CI timeout, an operator's kill) unwinds as Ctrl-C does:
    its servers run in sessions of their own, so without that they would all outlive it."""
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "benchmarks", "--quick", "--no-nginx", "--no-compare"),
            *("--only", "a_asgi", "--duration", "60"),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = []
        for line in proc.stderr:  # type: ignore[union-attr]
            seen.append(line)
            if line.startswith("measuring"):
                break
        assert proc.poll() is None, "".join(seen)
        run_dir = _run_dir_of(proc.pid)
        assert run_dir is not None and run_dir.startswith("/tmp/tb-"), run_dir
        assert _leftovers(run_dir, wait=0)  # its servers are up
        proc.send_signal(signal.SIGTERM)
        rest = proc.stderr.read()  # type: ignore[union-attr]
        code = proc.wait(timing.WAIT)
        (test_output / "bench-sigterm.log").write_text("".join(seen) + rest)
        assert code == 128 + signal.SIGTERM, rest[-2000:]
        assert _leftovers(run_dir) == []
        assert not Path(run_dir).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
