"""One benchmark run: start what is measured, run every scenario several times, summarise.

Runs are interleaved (run 1 of every scenario, then run 2 of every scenario, ...), so slow
drift of a shared machine hits all scenarios alike and ratios within one run stay fair.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import socket_bench as sb
from .plugins.build import build_bench_plugin
from .procstat import cmdline, descendants, rss_bytes, tagged
from .scenarios import Scenario, http_scenario, socket_scenario
from .slow_clients import slow_clients
from .stack import (
    ROOT,
    BaselineServer,
    CannedWeb,
    NginxFront,
    OneHopProxy,
    ToruStack,
    toru_app_spec,
)

SCHEMA = "toru-bench/1"
SDK_ID = "bench-sdk"
RAW_ID = "raw-python"
SDK_PATH = f"/api/plugins/route/{SDK_ID}/json"
RAW_PATH = "/api/plugins/route/raw/"
MIB_PATH = f"/api/plugins/route/{SDK_ID}/size/1048576"  # a 1 MiB JSON answer
ECHO_PATH = f"/api/plugins/route/{SDK_ID}/echo"  # POST: the request body back
MIB = 1024 * 1024
MINIMAL_ID = "bench-minimal"


@dataclass
class Options:
    """What to run; ``preset()`` fills these from ``--smoke/--quick/--full``."""

    mode: str = "quick"
    runs: int = 3
    duration: float = 3.0
    socket_duration: float = 2.0
    connections: int = 16
    workers: int | None = None  # default: toru serve's default (2 x cores)
    # The WSGI baseline's class (default sync); also Toru's, through GUNICORN_CMD_ARGS, when
    # Toru's own class (gunicorn_conf.py) is a WSGI one. The ASGI baseline is always "asgi".
    worker_class: str | None = None
    threads: int = 1
    slow_clients: int = 64  # stalled half-header connections of b_toru_sdk_slow
    scale: bool = False
    scale_concurrency: tuple[int, ...] = (1, 16, 64, 256)
    scale_plugins: tuple[int, ...] = (1, 10, 50)
    scale_sizes: tuple[int, ...] = (100, 10_240, 1_048_576)
    leak_requests: int = 0
    nginx: bool = True
    compare: bool = True
    only: tuple[str, ...] = ()  # scenario ids to measure (empty: all)
    target: str | None = None
    token: str | None = None
    sdk_path: str = SDK_PATH
    raw_path: str = RAW_PATH
    out: Path | None = None
    progress: Callable[[str], None] = field(
        default=lambda msg: print(msg, file=sys.stderr, flush=True)
    )


def preset(mode: str) -> Options:
    """The options of a named mode."""
    if mode == "smoke":
        return Options(mode="smoke", runs=1, duration=1.0, socket_duration=0.3)
    if mode == "full":
        return Options(
            mode="full",
            runs=5,
            duration=10.0,
            socket_duration=5.0,
            scale=True,
            leak_requests=1_000_000,
        )
    return Options(mode="quick")


def toru_worker_settings(workers: int | None) -> tuple[int, str]:
    """The worker count and class ``toru serve`` uses by default (read, not duplicated)."""
    from toru.config import load_config

    n = workers or load_config(None, {}).workers or 2 * (os.cpu_count() or 1)
    worker_class = "sync"  # gunicorn's default when the config file names none
    conf = ROOT / "toru" / "wsgi" / "gunicorn_conf.py"
    with contextlib.suppress(OSError):
        m = re.search(r"""^worker_class\s*=\s*["'](\w+)["']""", conf.read_text(), re.M)
        if m:
            worker_class = m.group(1)
    return int(n), worker_class


def machine_info() -> dict[str, Any]:
    """Where the numbers come from."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {
        "hostname": socket.gethostname(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def supervisor_pid(toru_pid: int) -> int | None:
    """The ``toru supervisor`` process under a ``toru serve`` (by command line)."""
    for pid in descendants(toru_pid):
        if pid != toru_pid and "supervisor" in cmdline(pid) and "gunicorn" not in cmdline(pid):
            return pid
    return None


def _redacted(argv: list[str]) -> list[str]:
    """The command line without the API token (results files get shared)."""
    out, hide = [], False
    for arg in argv:
        if hide:
            out.append("***")
            hide = False
        elif arg == "--token":
            out.append(arg)
            hide = True
        elif arg.startswith("--token="):
            out.append("--token=***")
        else:
            out.append(arg)
    return out


def _short_tmp(prefix: str) -> Path:
    # NOTE: Unix socket paths are limited to 107 bytes; keep the run directory short.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


class BenchmarkRun:
    """Everything one ``python -m benchmarks`` invocation starts, measures and stops."""

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.say = opts.progress
        self.workdir = _short_tmp("tb-")
        # Every process this run starts inherits this, so a test can find leftovers of
        # exactly this run in /proc/*/environ (other runs may go on in parallel).
        os.environ["TORU_BENCH_RUN"] = str(self.workdir)
        self.stack = contextlib.ExitStack()
        self.scenarios: list[Scenario] = []
        self.extra: dict[str, Any] = {}
        self.workers, self.toru_worker_class = toru_worker_settings(opts.workers)
        self.threads = opts.threads
        self.worker_class = opts.worker_class or "sync"  # the WSGI baseline's
        # NOTE: run as root, Toru runs plugins as toru-plugin, which cannot reach this run's
        # 0700 temporary directory nor, often, the venv's interpreter; the plugins run as
        # the benchmark's own user instead (as Toru does for a non-root user). Spawning
        # costs the same either way; the hot path does not change.
        self.toru_env: dict[str, str] = {
            "TORU_PLUGINS_USER": os.environ.get("TORU_PLUGINS_USER") or str(os.geteuid())
        }
        if opts.worker_class and self.toru_worker_class != "asgi":
            # NOTE: gunicorn lets GUNICORN_CMD_ARGS override the config file, so a WSGI
            # Toru runs the same worker settings as the WSGI baseline. An ASGI Toru keeps
            # its own class: a WSGI worker cannot serve it.
            self.toru_worker_class = opts.worker_class
            self.toru_env["GUNICORN_CMD_ARGS"] = (
                f"--worker-class {opts.worker_class} --threads {opts.threads}"
            )
        self.started = dt.datetime.now(dt.UTC)

    # ------------------------------------------------------------------ set-up

    def _start(self, what: str, obj: Any) -> Any:
        t0 = time.monotonic()
        self.say(f"starting {what} ...")
        self.stack.callback(obj.stop)
        obj.start()
        self.say(f"  {what} up in {time.monotonic() - t0:.1f}s")
        return obj

    def build_plugins(self, count: int = 1) -> dict[str, Path]:
        """The SDK benchmark plugin (``count`` copies) and the raw example."""
        sys.path.insert(0, str(ROOT / "examples"))
        out = self.workdir / f"plugins-{count}"
        ids = [SDK_ID] + [f"{SDK_ID}-{i:02d}" for i in range(2, count + 1)]
        built = build_bench_plugin(out, ids)
        raw = out / f"{RAW_ID}.binary"
        shutil.copyfile(ROOT / "examples" / "raw-python" / "plugin.py", raw)
        raw.chmod(0o755)
        built[RAW_ID] = raw
        return built

    def build_minimal(self) -> Path:
        """``benchmarks/plugins/bench_minimal.py`` as an executable on this Python."""
        dst = self.workdir / f"{MINIMAL_ID}.binary"
        src = (ROOT / "benchmarks" / "plugins" / "bench_minimal.py").read_text()
        dst.write_text(f"#!{sys.executable}\n" + src.split("\n", 1)[1])
        dst.chmod(0o755)
        return dst

    def start_toru(self, name: str, plugins: dict[str, Path], bind: str | None = None) -> ToruStack:
        home = self.workdir / name
        toru = ToruStack(
            home, list(plugins.values()), list(plugins), self.workers, bind=bind, env=self.toru_env
        )
        self._start(f"toru serve ({name}, {len(plugins)} plugins)", toru)
        toru.wait_route(SDK_PATH)
        return toru

    # ------------------------------------------------------------------ scenarios

    def _optional(self, what: str, obj: Any) -> Any | None:
        """Start a server only a comparison needs; on failure say why and go on without it
        (its scenarios are recorded as failed, the run still measures everything else)."""
        try:
            return self._start(what, obj)
        except Exception as exc:
            self.say(f"  {what} FAILED to start: {type(exc).__name__}: {str(exc)[:300]}")
            self.extra.setdefault("start_errors", {})[what] = f"{type(exc).__name__}: {exc}"
            return None

    def _failed(self, sid: str, label: str, what: str) -> Scenario:
        sc = http_scenario(sid, label, "http://127.0.0.1:9/", connections=self.opts.connections)
        sc.error = f"{what} did not start: {self.extra['start_errors'][what][:300]}"
        return sc

    def local_scenarios(self) -> None:
        """Every scenario against servers this run starts."""
        o = self.opts
        plugins = self.build_plugins()
        self.baseline = self._start(
            f"WSGI baseline: gunicorn + Falcon WSGI ({self.workers} {self.worker_class} workers)",
            BaselineServer(
                self.workdir / "baseline", self.workers, self.worker_class, self.threads
            ),
        )
        self.asgi_baseline = self._start(
            f"asgi baseline: gunicorn + Falcon ASGI ({self.workers} asgi workers, uvloop)",
            BaselineServer(self.workdir / "baseline", self.workers, "asgi"),
        )
        minimal = self.build_minimal()
        toru = self.start_toru("h1", {**plugins, MINIMAL_ID: minimal})
        toru.wait_route(RAW_PATH)
        toru.wait_route(f"/api/plugins/route/{MINIMAL_ID}/json")
        self.toru = toru
        floor = self._start(
            "benchmark plugin alone (floor)", sb.StandalonePlugin(plugins[SDK_ID], self.workdir)
        )
        (self.workdir / "minimal").mkdir(exist_ok=True)
        self.minimal_floor = self._start(
            "minimal plugin alone", sb.StandalonePlugin(minimal, self.workdir / "minimal")
        )

        def b_roots() -> list[int]:
            return [toru.pid]

        sync_, asgi_ = self.baseline, self.asgi_baseline
        base = lambda: [sync_.pid]  # noqa: E731
        abase = lambda: [asgi_.pid]  # noqa: E731
        c, n_slow = o.connections, o.slow_clients
        slow = lambda: slow_clients(toru.url, n_slow)  # noqa: E731
        self.scenarios += [
            http_scenario("a_sync", f"(a) direct Falcon, {self.worker_class} workers, {c} conns", sync_.url + SDK_PATH, connections=c, cpu_roots=base),
            http_scenario("a_asgi", f"(a) direct Falcon ASGI, asgi worker (uvloop), {c} conns", asgi_.url + SDK_PATH, connections=c, cpu_roots=abase),
            http_scenario("b_toru_sdk", f"(b) Toru -> SDK plugin, {c} conns", toru.url + SDK_PATH, connections=c, token=toru.token, cpu_roots=b_roots),
            http_scenario("b_toru_sdk_slow", f"(b) Toru -> SDK plugin, {c} conns + {n_slow} slow clients", toru.url + SDK_PATH, connections=c, token=toru.token, cpu_roots=b_roots, during=slow, params={"slow_clients": n_slow}),
            http_scenario("c_toru_raw", f"(c) Toru -> one-connection plugin (supervisor), {c} conns", toru.url + RAW_PATH, connections=c, token=toru.token, cpu_roots=b_roots),
            http_scenario("a_sync_c1", f"(a) direct, {self.worker_class}, 1 conn", sync_.url + SDK_PATH, connections=1, cpu_roots=base),
            http_scenario("a_asgi_c1", "(a) direct, asgi, 1 conn", asgi_.url + SDK_PATH, connections=1, cpu_roots=abase),
            http_scenario("b_toru_sdk_c1", "(b) Toru -> SDK, 1 conn", toru.url + SDK_PATH, connections=1, token=toru.token, cpu_roots=b_roots),
            http_scenario("b_toru_sdk_c64", "(b) Toru -> SDK, 64 conns", toru.url + SDK_PATH, connections=64, token=toru.token, cpu_roots=b_roots),
            http_scenario("a_sync_1m", f"(a) direct, {self.worker_class}, 1 MiB answers, {c} conns", sync_.url + MIB_PATH, connections=c, cpu_roots=base),
            http_scenario("a_asgi_1m", f"(a) direct, asgi, 1 MiB answers, {c} conns", asgi_.url + MIB_PATH, connections=c, cpu_roots=abase),
            http_scenario("b_toru_sdk_1m", f"(b) Toru -> SDK, 1 MiB answers, {c} conns", toru.url + MIB_PATH, connections=c, token=toru.token, cpu_roots=b_roots),
            http_scenario("a_sync_1mpost", f"(a) direct, {self.worker_class}, 1 MiB request bodies echoed, {c} conns", sync_.url + ECHO_PATH, connections=c, cpu_roots=base, method="POST", body_file=self._mib_body()),
            http_scenario("a_asgi_1mpost", f"(a) direct, asgi, 1 MiB request bodies echoed, {c} conns", asgi_.url + ECHO_PATH, connections=c, cpu_roots=abase, method="POST", body_file=self._mib_body()),
            http_scenario("b_toru_sdk_1mpost", f"(b) Toru -> SDK, 1 MiB request bodies echoed, {c} conns", toru.url + ECHO_PATH, connections=c, token=toru.token, cpu_roots=b_roots, method="POST", body_file=self._mib_body()),
        ]  # fmt: skip
        if o.compare:
            self.scenarios += self._compare_scenarios(toru)
            self.scenarios += [
                self._floor_scenario("p_one_hop", "minimal plugin", self.minimal_floor),
                self._floor_scenario("p_one_hop_sdk", "SDK plugin", floor),
            ]
        if o.nginx:
            self.scenarios.append(self._nginx_scenario(plugins))
        self.scenarios += self._socket_scenarios(toru, floor)

    def _mib_body(self) -> Path:
        """A 1 MiB request body that is not UTF-8 (a JSON string would need base64)."""
        path = self.workdir / "body-1mib.bin"
        if not path.exists():
            path.write_bytes((bytes(range(255, -1, -1)) * (MIB // 256))[:MIB])
        return path

    def _compare_scenarios(self, toru: ToruStack) -> list[Scenario]:
        """(h): a second gunicorn on Toru's home with the plugin's answers canned."""
        c = self.opts.connections
        sid, what = "h_app_only", "Toru app with canned plugin answers (no IPC)"
        label = f"(h) Toru app alone: plugin reply canned in the worker (no IPC), {c} conns"
        web = self._optional(what, CannedWeb(toru.home, self.workers, self.toru_env))
        if web is None:
            return [self._failed(sid, label, what)]
        return [http_scenario(
            sid, label, web.url + SDK_PATH, connections=c, token=toru.token,
            cpu_roots=lambda: [toru.pid, web.pid],
        )]  # fmt: skip

    def _floor_scenario(self, sid: str, name: str, plugin: sb.StandalonePlugin) -> Scenario:
        """(p): the lean one-hop floor (``benchmarks/one_hop_app.py``) to a plugin started
        alone. To the minimal plugin it is the least a hop costs; to the SDK plugin it is the
        most any Toru route to that plugin could do (no supervisor, no Toru app)."""
        c = self.opts.connections
        what = f"lean one-hop proxy to the {name}"
        label = f"(p) one-hop floor: plain ASGI -> {name}, no supervisor, no Toru app, {c} conns"
        workdir = self.workdir / sid
        workdir.mkdir(exist_ok=True)
        proxy = self._optional(what, OneHopProxy(workdir, self.workers, plugin.socket_path))
        if proxy is None:
            return self._failed(sid, label, what)
        return http_scenario(
            sid, label, proxy.url + SDK_PATH, connections=c,
            cpu_roots=lambda: [proxy.pid, plugin.pid],
        )  # fmt: skip

    def _nginx_scenario(self, plugins: dict[str, Path]) -> Scenario:
        sock = str(self.workdir / "web.sock")
        toru2 = self.start_toru("h2", {SDK_ID: plugins[SDK_ID]}, bind=f"unix:{sock}")
        nginx = self._start("nginx in front (Unix socket upstream)", NginxFront(self.workdir, sock))
        return http_scenario(
            "f_nginx_sdk",
            f"(f) nginx -> Toru (unix) -> SDK, {self.opts.connections} conns",
            nginx.url + SDK_PATH,
            connections=self.opts.connections,
            token=toru2.token,
            cpu_roots=lambda: [nginx.pid, toru2.pid],
        )

    def _socket_scenarios(self, toru: ToruStack, floor: sb.StandalonePlugin) -> list[Scenario]:
        control = str(toru.home / "run" / "supervisor.sock")
        route = "/" + SDK_ID
        conns: dict[str, socket.socket] = {}

        def pipelined(
            key: str, connect: Callable[[], socket.socket], hop_route: str | None, inflight: int
        ) -> Callable[[float], sb.SocketRun]:
            """Runs on one connection (opened on first use, kept): to a plugin socket, or
            ``hop_route`` through the supervisor's control socket."""
            if hop_route is None:
                frame, rid, ok = sb.plugin_frame(), sb.plugin_reply_id, sb.plugin_reply_ok
            else:
                frame = sb.control_frame(hop_route)
                rid, ok = sb.control_reply_id, sb.control_reply_ok

            def run(duration: float) -> sb.SocketRun:
                if key not in conns:
                    conns[key] = connect()
                    self.stack.callback(conns[key].close)
                return sb.pipelined_run(
                    conns[key], frame, rid, ok, inflight=inflight, duration=duration
                )

            return run

        def floor_run(inflight: int) -> Callable[[float], sb.SocketRun]:
            return pipelined("floor", floor.connect, None, inflight)

        def hop_run(inflight: int, route: str = route) -> Callable[[float], sb.SocketRun]:
            return pipelined(f"hop{route}", lambda: sb.connect_unix(control), route, inflight)

        def client_run(duration: float) -> sb.SocketRun:
            return sb.worker_client_run(control, route, duration)

        floor_roots = lambda: [floor.pid]  # noqa: E731
        toru_roots = lambda: [toru.pid]  # noqa: E731
        return [
            socket_scenario("d_floor_seq", "(d) plugin socket direct, sequential", floor_run(1), inflight=1, cpu_roots=floor_roots),
            socket_scenario("d_floor_32", "(d) plugin socket direct, 32 in flight", floor_run(32), inflight=32, cpu_roots=floor_roots),
            socket_scenario("e_hop_seq", "(e) supervisor hop, sequential", hop_run(1), inflight=1, cpu_roots=toru_roots),
            socket_scenario("e_hop_32", "(e) supervisor hop, 32 in flight", hop_run(32), inflight=32, cpu_roots=toru_roots),
            socket_scenario("d_minimal_32", "(d) minimal plugin socket direct, 32 in flight", pipelined("minimal", self.minimal_floor.connect, None, 32), inflight=32, cpu_roots=lambda: [self.minimal_floor.pid]),
            socket_scenario("e_hop_32_minimal", "(e) supervisor hop to the minimal plugin, 32 in flight", hop_run(32, "/" + MINIMAL_ID), inflight=32, cpu_roots=toru_roots),
            socket_scenario("e_client_seq", "(e) supervisor hop via the web worker's ControlClient.http, sequential", client_run, inflight=1, cpu_roots=toru_roots),
        ]  # fmt: skip

    def target_scenarios(self) -> None:
        """HTTP scenarios against an existing installation (``--target URL --token T``)."""
        o = self.opts
        base = o.target.rstrip("/")
        c = o.connections
        self.scenarios += [
            http_scenario("b_toru_sdk", f"(b) target {o.sdk_path}, {c} conns", base + o.sdk_path, connections=c, token=o.token),
            http_scenario("c_toru_raw", f"(c) target {o.raw_path}, {c} conns", base + o.raw_path, connections=c, token=o.token),
            http_scenario("b_toru_sdk_c1", f"(b) target {o.sdk_path}, 1 conn", base + o.sdk_path, connections=1, token=o.token),
            http_scenario("b_toru_sdk_c64", f"(b) target {o.sdk_path}, 64 conns", base + o.sdk_path, connections=64, token=o.token),
        ]  # fmt: skip

    # ------------------------------------------------------------------ measuring

    def measure(self, scenarios: list[Scenario], runs: int) -> None:
        """Interleaved runs of ``scenarios``, with a progress line per run: in order on even
        rounds, reversed on odd ones (as ``tools/ab.py``), so drift hits every scenario alike."""
        total = runs * len(scenarios)
        k = 0
        for i in range(runs):
            for sc in scenarios if i % 2 == 0 else scenarios[::-1]:
                k += 1
                if sc.error:
                    continue
                dur = self.opts.duration if sc.kind == "http" else self.opts.socket_duration
                try:
                    r = sc.run_once(dur)
                except Exception as exc:  # recorded in the JSON; the run goes on
                    sc.error = f"{type(exc).__name__}: {exc}"
                    self.say(f"[{k:3d}/{total}] {sc.id:<22} FAILED: {sc.error}")
                    continue
                cpu = r.get("cpu_us_per_request")
                cpu_s = f"  cpu {cpu:6.0f} us/req" if cpu is not None else ""
                err = f"  errors {r['errors']}" if r.get("errors") else ""
                self.say(
                    f"[{k:3d}/{total}] {sc.id:<22} run {i + 1}/{runs} {r['rps']:9.0f} req/s"
                    f"  p50 {r['p50_us'] / 1000:7.2f} ms  p99 {r['p99_us'] / 1000:7.2f} ms{cpu_s}{err}"
                )

    # ------------------------------------------------------------------ scale + leak

    def scale_scenarios(self) -> list[Scenario]:
        """Concurrency and body-size tables: both baselines and (b), same servers as the core
        scenarios."""
        o = self.opts
        variants = (
            ("sync", f"(a) direct {self.worker_class}", self.baseline.url, None, self.baseline.pid),
            ("asgi", "(a) direct asgi", self.asgi_baseline.url, None, self.asgi_baseline.pid),
            ("b", "(b) Toru -> SDK", self.toru.url, self.toru.token, self.toru.pid),
        )
        out: list[Scenario] = []
        for v, label, url, token, root in variants:
            roots = lambda r=root: [r]  # noqa: E731
            for c in o.scale_concurrency:
                out.append(http_scenario(
                    f"scale_conc_{v}_c{c}", f"{label}, {c} conns", url + SDK_PATH, connections=c,
                    token=token, cpu_roots=roots, group="scale_concurrency",
                    params={"variant": v, "concurrency": c},
                ))  # fmt: skip
            for size in o.scale_sizes:
                out.append(http_scenario(
                    f"scale_body_{v}_{size}", f"{label}, {size} B body",
                    url + f"/api/plugins/route/{SDK_ID}/size/{size}", connections=o.connections,
                    token=token, cpu_roots=roots, group="scale_body",
                    params={"variant": v, "body_bytes": size},
                ))  # fmt: skip
        return out

    def plugin_count_scale(self) -> list[Scenario]:
        """(b) with 1, 10, 50 enabled plugins: one Toru per count, all up at once, runs
        interleaved (so the machine's drift hits every count alike)."""
        out: list[Scenario] = []
        for n in self.opts.scale_plugins:
            plugins = self.build_plugins(n)
            plugins.pop(RAW_ID)
            toru = ToruStack(
                self.workdir / f"n{n}",
                list(plugins.values()),
                list(plugins),
                self.workers,
                env=self.toru_env,
            )
            self.say(f"starting toru serve with {n} enabled plugins ...")
            self.stack.callback(toru.stop)
            toru.start(timeout=180)
            for pid in plugins:  # every plugin must be up, else this measures start-up
                toru.wait_route(f"/api/plugins/route/{pid}/json", timeout=180)
            out.append(http_scenario(f"scale_plugins_b_{n}", f"(b) Toru -> SDK with {n} plugins enabled", toru.url + SDK_PATH, connections=self.opts.connections, token=toru.token, cpu_roots=lambda t=toru: [t.pid], group="scale_plugins", params={"variant": "b", "plugins": n}))  # fmt: skip
        self.measure(out, self.opts.runs)
        return out

    def leak_check(self, toru: ToruStack, total: int) -> dict[str, Any]:
        """Supervisor RSS while ``total`` requests go through the hop (32 in flight)."""
        sup = supervisor_pid(toru.pid)
        control = str(toru.home / "run" / "supervisor.sock")
        frame = sb.control_frame("/" + SDK_ID)
        samples: list[dict[str, Any]] = []
        done = 0
        step = max(1, total // 10)
        self.say(f"leak check: {total} requests through the supervisor, RSS of pid {sup} ...")
        sock = sb.connect_unix(control)
        try:
            samples.append({"requests": 0, "rss_bytes": rss_bytes(sup) if sup else None})
            while done < total:
                r = sb.pipelined_run(
                    sock,
                    frame,
                    sb.control_reply_id,
                    sb.control_reply_ok,
                    inflight=32,
                    duration=3600,
                    warmup=0,
                    limit=min(step, total - done),
                )
                done += r.requests
                samples.append(
                    {
                        "requests": done,
                        "rss_bytes": rss_bytes(sup) if sup else None,
                        "rps": round(r.rps, 1),
                    }
                )
                self.say(
                    f"  {done:>9} requests  supervisor RSS {samples[-1]['rss_bytes'] / 1e6 if sup else 0:.1f} MB"
                )
        finally:
            sock.close()
        rss = [s["rss_bytes"] for s in samples if s["rss_bytes"]]
        # Growth is judged after the first tenth (caches, allocator pools warm up first).
        growth = (rss[-1] - rss[1]) if len(rss) > 2 else None
        return {
            "supervisor_pid": sup,
            "requests": done,
            "samples": samples,
            "rss_growth_bytes_after_warmup": growth,
        }

    # ------------------------------------------------------------------ the whole run

    def run(self) -> dict[str, Any]:
        """Start, measure, stop; returns the result document."""
        o = self.opts
        try:
            if o.target:
                self.target_scenarios()
            else:
                self.local_scenarios()
            if o.only:
                self.scenarios = [s for s in self.scenarios if s.id in o.only]
            self.say(f"measuring {len(self.scenarios)} scenarios x {o.runs} runs ...")
            self.measure(self.scenarios, o.runs)
            if o.scale and not o.target:
                scale = self.scale_scenarios()
                self.say(f"scale: {len(scale)} scenarios x {o.runs} runs ...")
                self.measure(scale, o.runs)
                self.scenarios += scale
            if o.leak_requests and not o.target:
                self.extra["leak"] = self.leak_check(self.toru, o.leak_requests)
            if o.scale and not o.target:
                self.stack.close()  # the servers above go; the plugin-count Torus come up
                self.scenarios += self.plugin_count_scale()
        finally:
            self.close()
        return self.document()

    def close(self) -> None:
        """Stop every server this run started and remove its work directory.

        Then kill whatever of this run still lives: a process spawned just as a SIGTERM
        arrived has no handle to stop it by (wrk between fork and ``Popen`` returning). What
        had to be killed is recorded (``reaped``): stopping normally leaves nothing."""
        self.stack.close()
        deadline = time.monotonic() + 10  # the workers of a stopped master may still exit
        while (left := tagged(str(self.workdir))) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        if left:
            reaped = [f"{pid}: {cmd}" for pid, cmd in left.items()]
            self.say(f"killed {len(reaped)} processes left running: {reaped}")
            self.extra["reaped"] = reaped
        shutil.rmtree(self.workdir, ignore_errors=True)

    def document(self) -> dict[str, Any]:
        """The result JSON (schema ``toru-bench/1``)."""
        from .targets import evaluate

        o = self.opts
        scen = {s.id: s.summary() for s in self.scenarios}
        doc: dict[str, Any] = {
            "schema": SCHEMA,
            "mode": o.mode,
            "started_at": self.started.isoformat(timespec="seconds"),
            "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": "python -m benchmarks " + " ".join(_redacted(sys.argv[1:])),
            "machine": machine_info(),
            "config": {
                "runs": o.runs,
                "duration_s": o.duration,
                "socket_duration_s": o.socket_duration,
                "connections": o.connections,
                "workers": self.workers,
                "worker_class": self.worker_class,
                "threads": self.threads,
                "toru_worker_class": self.toru_worker_class,
                "toru_app": toru_app_spec(),
                "slow_clients": o.slow_clients,
                "target": o.target,
                "wrk_threads": 1,
                "workdir": str(self.workdir),
            },
            "scenarios": scen,
            "leak": self.extra.get("leak"),
            "start_errors": self.extra.get("start_errors", {}),
            "reaped": self.extra.get("reaped", []),
        }
        doc["targets"] = evaluate(doc)
        return doc
