"""Each asgi worker reaches the supervisor over one connection, whatever its concurrency
(real ``toru serve``): 32 plugin-route requests in flight through the supervisor each
get their own answer, and every worker holds exactly one connection to
``run/supervisor.sock`` meanwhile (``ss -xp``: the supervisor's end of each accepted
connection names the socket path, its peer inode is the worker's end), while the workers'
``toru_proxy_inflight`` shows more requests in flight than there are workers."""

from __future__ import annotations

import re
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor

from tests import timing
from tests.servers import ToruServer
from tests.web.procs import children, find_child
from tests.web.webtest_plugin import install

_LINE = re.compile(r"^u_str\s+\S+\s+\d+\s+\d+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)\s*(.*)$")


def _connections_to(path: str) -> dict[int, int]:
    """pid -> number of its Unix sockets connected to the listening socket ``path``."""
    out = subprocess.run(["ss", "-xpn"], capture_output=True, text=True, check=True).stdout
    owner: dict[str, set[int]] = {}
    server_peers: list[str] = []
    for line in out.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        local, inode, peer, users = m.groups()
        owner[inode] = {int(p) for p in re.findall(r"pid=(\d+)", users)}
        if local == path:
            server_peers.append(peer)
    counts: dict[int, int] = {}
    for peer in server_peers:
        for pid in owner.get(peer, ()):
            counts[pid] = counts.get(pid, 0) + 1
    return counts


def test_each_worker_multiplexes_one_control_connection(short_home):
    install(short_home / "plugins")
    with ToruServer(short_home, enable=["web-test"], workers=2) as s:
        cookie, csrf = s.login()
        status, body = s.json("POST", "/api/auth/tokens", {"name": "t"}, cookie=cookie, csrf=csrf)
        assert status in (200, 201), body
        token = body["token"]
        workers = children(find_child(s.pid, "gunicorn"))
        assert len(workers) == 2
        sock = str(short_home / "run" / "supervisor.sock")
        seen: list[dict[int, int]] = []
        inflight: list[float] = []
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                seen.append(_connections_to(sock))
                _, _, text = s.request("GET", "/metrics", timeout=timing.HTTP)
                m = re.search(rb'toru_proxy_inflight\{plugin="web-test"\} ([\d.]+)', text)
                inflight.append(float(m.group(1)) if m else 0.0)
                stop.wait(0.1)

        def get(i: int) -> tuple[int, bytes]:
            path = f"/api/plugins/route/webtest/slow?ms=1500&id=r{i}"
            status, _, body = s.request("GET", path, token=token, timeout=timing.HTTP)
            return status, body

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            with ThreadPoolExecutor(32) as pool:
                answers = list(pool.map(get, range(32)))
        finally:
            stop.set()
            watcher.join()
        for i, (status, body) in enumerate(answers):
            assert status == 200 and f'"r{i}"'.encode() in body, (i, status, body)
        assert seen
        for counts in seen:
            for pid in workers:
                assert counts.get(pid, 0) <= 1, counts  # never a second connection
        assert any(all(counts.get(pid) == 1 for pid in workers) for counts in seen), seen
        # and those connections carried many requests at once, not one per worker
        assert max(inflight) > len(workers), inflight
