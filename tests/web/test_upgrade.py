"""Zero-downtime upgrade and graceful restart through a real ``toru serve`` (issue 14).

Several client loops (threads, each on its own keep-alive connection, one of them with
requests that take a while, so some are in flight at the switch) run across the swap; every
answer must be 2xx, and afterwards every loop must be answered by the new version's process
(the plugin reports its version and pid). Covered: an SDK plugin (the workers' direct
channel, if on, must follow the switch), a one-connection original-protocol plugin (through
the supervisor), a restart (API and CLI), and new versions that fail in each way the
supervisor knows (the old process serves on, event ``upgrade_failed``).

The numbers (answers, non-2xx, swap duration) are printed: run with ``-s`` to see them.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests import timing
from tests.servers import ToruServer
from tests.supervisor.helpers import MISBEHAVE, pid_alive, wait_for
from tests.web.versioned_plugin import install, install_atomically

ENV = {"TORU_RESCAN_INTERVAL": "0.3", "TORU_HEALTH_INTERVAL": "1"}
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

    def wait_every_loop(self, since: float, version: str) -> None:
        """Until every loop got at least two answers from ``version`` after ``since``."""

        def done() -> bool:
            with self._lock:
                return all(
                    sum(1 for a in self.answers if a[1] == i and a[0] >= since and a[3] == version)
                    >= 2
                    for i in range(len(self.paths))
                )

        wait_for(done, timing.WAIT, 0.05)

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
        loops.wait_every_loop(t0, new_version)
        switched = min(a[0] for a in loops.answers if a[0] >= t0 and a[3] == new_version)
        t1 = time.monotonic()
        wait_for(lambda: loops.count(since=t1) >= 50, timing.WAIT)
    numbers = loops.summary()
    assert numbers["non_2xx"] == 0, numbers
    upgraded = events(server, cookie, plugin_id, "upgraded")
    assert len(upgraded) == before + 1, upgraded
    details = upgraded[0]["details"]
    assert details["old_pid"] == old_pid and details["new_pid"] != old_pid
    for _, _, _, version, pid in loops.last_answers():  # every loop is on the new process
        assert (version, pid) == (new_version, details["new_pid"])
    wait_for(lambda: not pid_alive(old_pid), timing.WAIT)  # retired once it was done
    numbers["swap_seconds"] = round(switched - t0, 3)  # file renamed -> first new answer
    numbers["old"], numbers["new"] = old_version, new_version
    print(f"\n{plugin_id}: {numbers}")
    return numbers


def test_sdk_plugin_upgrade_under_load_answers_every_request(short_home):
    plugins = short_home / "plugins"
    install(plugins, "up-sdk", "1")
    with ToruServer(short_home, enable=["up-sdk"], workers=2, env=ENV) as s:
        cookie, _ = s.login()
        route = "/api/plugins/route/up-sdk"

        def swap() -> str:
            install(plugins, "up-sdk", "2")  # renamed over the running one's file
            return "2"

        upgrade_under_load(
            s, cookie, "up-sdk", f"{route}/version", f"{route}/slow?ms={SDK_SLOW_MS}", swap
        )
        info = s.json("GET", "/api/plugins/up-sdk", cookie=cookie)[1]
        assert info["version"] == "2" and info["state"] == "running"
        assert info["upgrade_error"] is None


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
