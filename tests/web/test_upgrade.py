"""Zero-downtime upgrade and graceful restart through a real ``toru serve`` (issue 14).

Several client loops (threads, each on its own keep-alive connection, one of them with
requests that take a while, so some are in flight at the switch) run across the swap; every
answer must be 2xx, and afterwards every loop must be answered by the new version's process
(the plugin reports its version and pid). Covered: an SDK plugin (concurrent answers), a
one-connection original-protocol plugin, a restart (API and CLI), and new versions that
fail in each way the supervisor knows (the old process serves on, event ``upgrade_failed``).

The numbers (answers, non-2xx, swap duration) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests import timing
from tests.security.helpers import SHIPPED_DEFAULT, needs_root, plugin_python, proc_ids
from tests.servers import ToruServer
from tests.supervisor.helpers import MISBEHAVE, pid_alive, wait_for
from tests.web.versioned_plugin import install, install_atomically

# Binaries are renamed over by hand here, as `toru plugins install` does; the SDK test goes
# through `install` itself, which also pins (tests/supervisor/test_pins.py covers pinning).
ENV = {"TORU_RESCAN_INTERVAL": "0.3", "TORU_HEALTH_INTERVAL": "1", "TORU_PIN_BINARIES": "false"}
LOOPS = 4
SLOW_MS = int(timing.scaled(300))  # the slow loop's requests: in flight at the switch
# Well beyond the SDK's own shutdown grace (2 s), and the swap starts just after one of them
# was sent: the old instance must be left to finish it, not just until its SDK gives up.
SDK_SLOW_MS = 3000 + int(timing.scaled(1000))


def install_one_connection(plugins: Path, plugin_id: str, version: str, mode: str = "good"):
    """misbehave.py (an original plugin: one connection, in order) as ``<plugin_id>.binary``,
    renamed over the old file."""
    return install_atomically(
        plugins / f"{plugin_id}.binary",
        f'#!/bin/sh\nMISBEHAVE_VERSION={version} exec "{sys.executable}" -I "{MISBEHAVE}"'
        f' {mode} {plugin_id} "$@"\n',
    )


class ClientLoops:
    """``LOOPS`` loops GETting ``fast`` and one GETting ``slow`` until ``stop``.

    Every answer is ``(monotonic time, loop, status, version, pid)``; a connection error is
    status 0 (and counts as non-2xx).
    """

    def __init__(self, server: ToruServer, cookie: str, fast: str, slow: str) -> None:
        self.server = server
        self.headers = {"Cookie": cookie}
        self.paths = [fast] * LOOPS + [slow]
        self.answers: list[tuple[float, int, int, str, int]] = []
        self._lock = threading.Lock()
        self._sent: dict[int, float] = {}  # loop -> when its request in flight was sent
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._loop, args=(i,), daemon=True)
            for i in range(len(self.paths))
        ]

    def __enter__(self) -> ClientLoops:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timing.HTTP)

    def _loop(self, i: int) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            if conn is None:
                conn = self.server.connection(timing.HTTP)
            try:
                self._sent[i] = time.monotonic()
                conn.request("GET", self.paths[i], headers=self.headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                status, data = 0, repr(exc).encode()
            version, pid = "", 0
            if status == 200:
                body = json.loads(data)
                version, pid = str(body["version"]), int(body["pid"])
            else:
                print(f"loop {i}: {status} {data[:300]!r}")
            with self._lock:
                self.answers.append((time.monotonic(), i, status, version, pid))
        if conn is not None:
            conn.close()

    def slow_just_sent(self) -> bool:
        """The slow loop sent its current request a moment ago (it is in flight)."""
        return time.monotonic() - self._sent.get(len(self.paths) - 1, -1e9) < 0.2

    def count(self, since: float = 0.0, loop: int | None = None) -> int:
        with self._lock:
            return sum(1 for a in self.answers if a[0] >= since and loop in (None, a[1]))

    def wait_every_loop(self, since: float, version: str, pid: int = 0) -> None:
        """Until every loop got two answers from ``version`` (and process ``pid``, if
        given) after ``since``."""

        def new(a: tuple[float, int, int, str, int]) -> bool:
            return a[0] >= since and a[3] == version and pid in (0, a[4])

        def done() -> bool:
            with self._lock:
                return all(
                    sum(1 for a in self.answers if a[1] == i and new(a)) >= 2
                    for i in range(len(self.paths))
                )

        wait_for(done, timing.WAIT, 0.05)

    def first(self, since: float, pid: int) -> float:
        """When process ``pid`` answered first after ``since``."""
        with self._lock:
            return min(a[0] for a in self.answers if a[0] >= since and a[4] == pid)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            answers = list(self.answers)
        return {
            "answers": len(answers),
            "non_2xx": sum(1 for a in answers if not 200 <= a[2] < 300),
            "statuses": sorted({a[2] for a in answers}),
        }

    def last_answers(self) -> list[tuple[float, int, int, str, int]]:
        """Each loop's last answer."""
        with self._lock:
            last: dict[int, tuple[float, int, int, str, int]] = {}
            for a in self.answers:
                last[a[1]] = a
        return [last[i] for i in range(len(self.paths))]


def events(server: ToruServer, cookie: str, plugin_id: str, kind: str) -> list[dict[str, Any]]:
    status, body = server.json("GET", f"/api/plugins/{plugin_id}/events?limit=200", cookie=cookie)
    assert status == 200, body
    return [e for e in body if e["event_type"] == kind]


def serving(server: ToruServer, cookie: str, path: str) -> tuple[str, int]:
    """``(version, pid)`` of the process answering ``path`` now."""
    status, body = server.json("GET", path, cookie=cookie)
    assert status == 200, body
    return str(body["version"]), int(body["pid"])


def upgrade_under_load(
    server: ToruServer, cookie: str, plugin_id: str, fast: str, slow: str, swap: Any
) -> dict[str, Any]:
    """Run the loops, ``swap()`` midway, wait until the new version answers every loop.
    Returns the numbers; asserts every answer was 2xx and the old process is gone."""
    old_version, old_pid = wait_for(lambda: serving(server, cookie, fast), timing.WAIT)
    before = len(events(server, cookie, plugin_id, "upgraded"))
    with ClientLoops(server, cookie, fast, slow) as loops:
        wait_for(lambda: all(loops.count(loop=i) >= 2 for i in range(LOOPS + 1)), timing.WAIT)
        wait_for(loops.slow_just_sent, timing.WAIT, 0.01)
        t0 = time.monotonic()
        new_version = swap()

        def newest() -> dict[str, Any] | None:
            found = events(server, cookie, plugin_id, "upgraded")  # newest first
            return found[0]["details"] if len(found) > before else None

        details = wait_for(newest, timing.WAIT)
        loops.wait_every_loop(t0, new_version, details["new_pid"])
        switched = loops.first(t0, details["new_pid"])
        t1 = time.monotonic()
        wait_for(lambda: loops.count(since=t1) >= 50, timing.WAIT)
    numbers = loops.summary()
    assert numbers["non_2xx"] == 0, numbers
    assert len(events(server, cookie, plugin_id, "upgraded")) == before + 1
    assert details["old_pid"] == old_pid and details["new_pid"] != old_pid
    for _, _, _, version, pid in loops.last_answers():  # every loop is on the new process
        assert (version, pid) == (new_version, details["new_pid"])
    wait_for(lambda: not pid_alive(old_pid), timing.WAIT)  # retired once it was done
    numbers["swap_seconds"] = round(switched - t0, 3)  # file renamed -> first new answer
    numbers["old"], numbers["new"] = old_version, new_version
    print(f"\n{plugin_id}: {numbers}")
    return numbers


def test_sdk_plugin_upgrade_under_load_answers_every_request(short_home):
    """Through ``toru plugins install`` (checked, pinned, renamed over the running file)."""
    plugins = short_home / "plugins"
    install(plugins, "up-sdk", "1")
    env = {**ENV, "TORU_PIN_BINARIES": "true"}
    with ToruServer(short_home, enable=["up-sdk"], workers=2, env=env) as s:
        cookie, _ = s.login()
        route = "/api/plugins/route/up-sdk"

        def swap() -> str:
            new = install(short_home / "src", "up-sdk", "2")
            s.toru("plugins", "--home", str(short_home), "install", str(new), timeout=timing.WAIT)
            return "2"

        upgrade_under_load(
            s, cookie, "up-sdk", f"{route}/version", f"{route}/slow?ms={SDK_SLOW_MS}", swap
        )
        info = s.json("GET", "/api/plugins/up-sdk", cookie=cookie)[1]
        assert info["version"] == "2" and info["state"] == "running"
        assert info["upgrade_error"] is None
        cgroup = info["cgroup"]["path"]
        if cgroup is not None:  # the new process ran in its own cgroup; the old one's is gone
            assert cgroup.endswith("/up-sdk.1"), cgroup
            assert Path(f"/proc/{info['pid']}/cgroup").read_text().strip().endswith("/up-sdk.1")
            wait_for(lambda: not Path(cgroup).with_name("up-sdk").exists(), timing.WAIT)


def test_one_connection_plugin_upgrade_under_load_answers_every_request(short_home):
    plugins = short_home / "plugins"
    install_one_connection(plugins, "up-raw", "1")
    with ToruServer(short_home, enable=["up-raw"], workers=2, env=ENV) as s:
        cookie, _ = s.login()
        route = "/api/plugins/route/up-raw"

        def swap() -> str:
            install_one_connection(plugins, "up-raw", "2")
            return "2"

        slow = f"{route}/sleep?s={SLOW_MS / 1000}"
        upgrade_under_load(s, cookie, "up-raw", f"{route}/pid", slow, swap)


def test_restart_under_load_answers_every_request_api_and_cli(short_home):
    plugins = short_home / "plugins"
    install(plugins, "up-sdk", "1")
    install_one_connection(plugins, "up-off", "1")  # installed, never enabled
    with ToruServer(short_home, enable=["up-sdk"], workers=2, env=ENV) as s:
        cookie, csrf = s.login()
        route = "/api/plugins/route/up-sdk"
        answer: dict[str, Any] = {}

        def swap() -> str:
            status, answer["info"] = s.json(
                "POST", "/api/plugins/up-sdk/restart", cookie=cookie, csrf=csrf
            )
            assert status == 200, answer
            return "1"  # the same binary: a new process of the same version

        upgrade_under_load(
            s, cookie, "up-sdk", f"{route}/version", f"{route}/slow?ms={SDK_SLOW_MS}", swap
        )
        assert answer["info"]["state"] == "running" and answer["info"]["pid"] != 0
        restarted = events(s, cookie, "up-sdk", "upgraded")[0]["details"]
        assert restarted["restart"] is True and restarted["new_pid"] == answer["info"]["pid"]
        # the errors a caller can act on
        status, body = s.json("POST", "/api/plugins/nope/restart", cookie=cookie, csrf=csrf)
        assert status == 404, body
        status, body = s.json("POST", "/api/plugins/up-off/restart", cookie=cookie, csrf=csrf)
        assert status == 409 and "not enabled" in body["message"], body
        # the CLI goes through the same control op
        _, pid = serving(s, cookie, f"{route}/version")
        out = s.toru("plugins", "--home", str(short_home), "restart", "up-sdk")
        assert out.startswith("up-sdk: restarted (pid ") and str(pid) not in out, out
        wait_for(lambda: serving(s, cookie, f"{route}/version")[1] != pid, timing.WAIT)
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "toru.cli",
            "plugins",
            "--home",
            str(short_home),
            "restart",
            "up-sdk",
        ],
        env=s.child_env(),
        capture_output=True,
        text=True,
        timeout=timing.WAIT,
    )
    assert cp.returncode == 1 and "no supervisor is running" in cp.stderr, cp


def test_failing_new_versions_leave_the_old_one_serving(short_home):
    """Each way a new version can fail: the old process answers every request meanwhile,
    ``upgrade_failed`` says why, the failed file is not retried; a good one then takes over."""
    plugins = short_home / "plugins"
    install_one_connection(plugins, "up-raw", "1")
    install_one_connection(plugins, "up-other", "1")  # owns the route /up-other
    env = {**ENV, "TORU_HEALTH_TIMEOUT": str(timing.scaled(2))}  # "hang" never answers
    misbehave = f'exec "{sys.executable}" -I "{MISBEHAVE}"'
    failures = [  # (what the new file runs, what the reason must say)
        (f"{misbehave} bad-metadata up-raw", "--metadata"),
        (f"{misbehave} metadata-fail up-raw", "--metadata"),
        (f"{misbehave} crash-start up-raw", "failed to start"),
        (f"{misbehave} hang up-raw", "never got healthy"),
        (f"{misbehave} good up-other", "declares the id 'up-other'"),
        (f"MISBEHAVE_ROUTE_UP_RAW=/up-other {misbehave} good up-raw", "is up-other's"),
    ]
    with ToruServer(short_home, enable=["up-raw", "up-other"], workers=2, env=env) as s:
        cookie, _ = s.login()
        route = "/api/plugins/route/up-raw"
        _, pid = wait_for(lambda: serving(s, cookie, f"{route}/pid"), timing.WAIT)
        with ClientLoops(s, cookie, f"{route}/pid", f"{route}/sleep?s={SLOW_MS / 1000}") as loops:
            for n, (command, reason) in enumerate(failures, 1):
                install_atomically(plugins / "up-raw.binary", f'#!/bin/sh\n{command} "$@"\n')
                wait_for(
                    lambda n=n: len(events(s, cookie, "up-raw", "upgrade_failed")) >= n,
                    timing.WAIT,
                )
                got = events(s, cookie, "up-raw", "upgrade_failed")[0]["details"]
                assert reason in got["reason"], (command, got)
                info = s.json("GET", "/api/plugins/up-raw", cookie=cookie)[1]
                assert info["pid"] == pid and info["upgrade_error"] == got["reason"], info
            time.sleep(timing.scaled(1))  # rescans meanwhile do not retry the same file
            assert len(events(s, cookie, "up-raw", "upgrade_failed")) == len(failures)
            t0 = time.monotonic()
            install_one_connection(plugins, "up-raw", "3")
            loops.wait_every_loop(t0, "3")
        numbers = loops.summary()
        assert numbers["non_2xx"] == 0, numbers
        assert [e["details"]["old_pid"] for e in events(s, cookie, "up-raw", "upgraded")] == [pid]
        print(f"\nfailing versions: {numbers}")


@needs_root
def test_upgrade_of_a_plugin_running_as_its_own_uid(short_home):
    """Per-plugin uids (issue 13): the new process gets its own socket directory, owned by
    the plugin's uid like the old one's, runs as that uid, and the old one's is removed."""
    plugins = short_home / "plugins"

    def install_as_other(version: str) -> str:
        install_atomically(
            plugins / "up-uid.binary",
            f"#!{plugin_python()}\nimport os, sys\n"
            f"os.environ['MISBEHAVE_VERSION'] = {version!r}\n"
            "sys.argv[1:1] = ['good', 'up-uid']\n" + MISBEHAVE.read_text(),
        )
        return version

    install_as_other("1")
    env = {**ENV, **SHIPPED_DEFAULT, "TORU_PLUGINS_ISOLATION": "per-plugin"}
    with ToruServer(short_home, enable=["up-uid"], workers=2, env=env) as s:
        cookie, _ = s.login()
        route = "/api/plugins/route/up-uid"
        _, old_pid = wait_for(lambda: serving(s, cookie, f"{route}/pid"), timing.WAIT)
        uid = proc_ids(old_pid)[0]
        assert uid != os.geteuid()
        slow = f"{route}/sleep?s={SLOW_MS / 1000}"
        upgrade_under_load(s, cookie, "up-uid", f"{route}/pid", slow, lambda: install_as_other("2"))
        _, new_pid = serving(s, cookie, f"{route}/pid")
        assert proc_ids(new_pid)[0] == uid
        run_p = short_home / "run" / "p"
        assert (run_p / "up-uid.1").stat().st_uid == uid
        wait_for(lambda: not (run_p / "up-uid").exists(), timing.WAIT)
