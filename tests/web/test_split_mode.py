"""Split mode as the systemd units run it: ``toru supervisor`` plus
``gunicorn -c deploy/gunicorn.conf.py toru.wsgi:application`` on a Unix socket.

Checks the shipped gunicorn config end to end: first-run admin with a random password in
``var/initial-admin-password`` (0600), the socket's permissions, a plugin route, /metrics
from both processes, and ``child_exit`` -> ``mark_process_dead`` for a killed worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time

from tests.servers import ROOT, ToruServer
from tests.web.procs import children, wait_gone
from toru.serve import control_call


def _wait(fn, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if fn():
                return True
        time.sleep(0.1)
    return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)


def test_split_mode(short_home, example_plugins):
    home = short_home
    sock = home / "web.sock"
    harness = ToruServer(home, bind=f"unix:{sock}")  # used for its CLI and HTTP helpers only
    (home / "plugins").mkdir()
    dst = home / "plugins" / "hello-python.binary"
    dst.write_bytes(example_plugins["hello-python"].read_bytes())
    dst.chmod(0o755)
    harness.toru("plugins", "--home", str(home), "enable", "hello-python")

    env = dict(os.environ)
    env.pop("TORU_ADMIN_PASSWORD", None)
    env.update(
        {
            "TORU_HOME": str(home),
            "PROMETHEUS_MULTIPROC_DIR": str(home / "var" / "metrics"),
            "TORU_BIND": f"unix:{sock}",
            "TORU_WORKERS": "2",
            "TORU_SHUTDOWN_GRACE": "2",
        }
    )
    (home / "var" / "metrics").mkdir(parents=True)
    log = open(home / "split.out", "wb")  # noqa: SIM115 - closed below
    sup = subprocess.Popen(
        [sys.executable, "-m", "toru.cli", "supervisor", "--home", str(home)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    web = None
    try:
        assert _wait(lambda: control_call(home / "run" / "supervisor.sock", "hello", timeout=2))
        web = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                str(ROOT / "deploy" / "gunicorn.conf.py"),
                "toru.wsgi:application",
            ],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        assert _wait(lambda: harness.request("GET", "/healthz", timeout=2)[0] == 200), (
            home / "split.out"
        ).read_text()

        mode = stat.S_IMODE(sock.stat().st_mode)
        assert mode & 0o007 == 0, oct(mode)  # umask 007: no access for others
        pw_file = home / "var" / "initial-admin-password"
        assert stat.S_IMODE(pw_file.stat().st_mode) == 0o600
        harness.admin_password = pw_file.read_text().strip()
        cookie, _ = harness.login()
        assert _wait(
            lambda: harness.request("GET", "/api/plugins/route/hello/echo", cookie=cookie)[0] == 200
        )
        status, _, body = harness.request("GET", "/api/plugins/route/hello/echo", cookie=cookie)
        assert json.loads(body)["method"] == "GET"

        status, _, body = harness.request("GET", "/metrics", cookie=cookie)
        text = body.decode()
        assert status == 200
        assert 'toru_plugin_up{plugin="hello-python"} 1.0' in text  # from the supervisor
        assert "toru_proxy_request_duration_seconds_count" in text  # from the workers

        # a worker dies: gunicorn replaces it and child_exit drops its live-gauge files
        # The victim is a worker that wrote metrics: with sync workers a hot one may have
        # served every request so far, and the other has no files yet.
        metrics_dir = home / "var" / "metrics"

        def wrote_metrics(pid: int) -> bool:
            return any(f.name.endswith(f"_{pid}.db") for f in metrics_dir.iterdir())

        victims = [w for w in sorted(children(web.pid)) if wrote_metrics(w)]
        assert victims, sorted(f.name for f in metrics_dir.iterdir())
        victim = victims[0]
        os.kill(victim, signal.SIGKILL)
        assert wait_gone({victim}) == set()
        assert _wait(lambda: len(children(web.pid)) == 2 and victim not in children(web.pid))
        assert _wait(
            lambda: (
                not any(
                    f.name.startswith("gauge_live") and f.name.endswith(f"_{victim}.db")
                    for f in metrics_dir.iterdir()
                )
            )
        )
    finally:
        if web is not None:
            _stop(web)
        _stop(sup)
        log.close()
