"""Log write errors (issue 11 item 4): a full disk, a removed log directory and a broken file
never stop the supervisor or a plugin; lines are dropped, counted in
``toru_log_write_errors_total``, and logging resumes by itself.

The disk-full tests mount a 64 KiB tmpfs over the log directory (this suite runs as root);
the unit tests at the end need no privileges.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest

from toru.supervisor.logs import LogWriter

from .helpers import SupervisorProc, make_plugin, metric_value, scrape_metrics, wait_for


def _mount_tiny_tmpfs(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(path)], check=True)


def _fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; returns it (delete it to free the space)."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        while os.write(fd, b"\0" * 512):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


@pytest.fixture
def tiny_log_dir(home):
    """``var/log`` on a 64 KiB tmpfs for the test's supervisor."""
    log_dir = home / "var" / "log"
    _mount_tiny_tmpfs(log_dir)
    yield log_dir
    subprocess.run(["umount", "-l", str(log_dir)], check=False)


def _say(sup: SupervisorProc, route: str, msg: str) -> int:
    return sup.client.http(route, "GET", f"/say?msg={msg}").status


def _logged(sup: SupervisorProc, plugin: str, msg: str) -> bool:
    page = sup.call("logs", {"plugin": plugin, "page_size": 200})
    return any(e.get("message") == msg for e in page["entries"])


def _wait_logged_again(sup: SupervisorProc, plugin: str, prefix: str) -> None:
    """Say ``<prefix>-N`` through the plugin until one of them shows up in its log."""
    n = itertools.count()

    def said_and_logged() -> bool:
        assert _say(sup, "/" + plugin, f"{prefix}-{next(n)}") == 200
        page = sup.call("logs", {"plugin": plugin, "page_size": 50})["entries"]
        return any(str(e.get("message", "")).startswith(prefix + "-") for e in page)

    wait_for(said_and_logged, interval=0.2)


def _plugin_errors(home: Path, plugin: str) -> float:
    text = scrape_metrics(home)
    return metric_value(text, f'toru_log_write_errors_total{{log="plugin",plugin="{plugin}"}}')


def test_a_full_disk_drops_plugin_log_lines_and_logging_resumes(home, tiny_log_dir):
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        pid = sup.wait_state("alpha", "running")["pid"]
        filler = _fill(tiny_log_dir)
        # More than the page the open log file already has: the writes must hit ENOSPC.
        for i in range(60):
            assert sup.client.http("/alpha", "GET", "/stderr?n=100").status == 200, i
            if _plugin_errors(home, "alpha") >= 1:
                break
        wait_for(lambda: _plugin_errors(home, "alpha") >= 1)
        # The plugin and the supervisor carry on: same pid, answers, control ops work.
        assert sup.info("alpha")["pid"] == pid and sup.info("alpha")["state"] == "running"
        assert sup.client.http("/alpha", "GET", "/echo").status == 200
        page = sup.call("logs", {"plugin": "alpha", "page_size": 1000})["entries"]
        assert sum(str(e.get("message")).startswith("line ") for e in page) < 100 * (i + 1)
        filler.unlink()
        # Logging resumes by itself once there is room (the writer retries once a second).
        _wait_logged_again(sup, "alpha", "back")
        assert sup.info("alpha")["pid"] == pid
    stderr = (home / "supervisor.stderr").read_text()
    assert "cannot write" in stderr and "dropping lines" in stderr
    assert "writing " in stderr and " again (" in stderr


def test_the_supervisor_survives_its_own_log_on_a_full_disk(home, tiny_log_dir):
    make_plugin(home / "plugins", "alpha")
    log = tiny_log_dir / "plugin-supervisor.log"
    sample = 'toru_log_write_errors_total{log="supervisor",plugin=""}'

    def cycle() -> None:  # each enable/disable writes supervisor log lines and plugin events
        assert sup.call("enable", {"plugin": "alpha"})["state"] in ("starting", "running")
        sup.wait_state("alpha", "running")
        assert sup.call("disable", {"plugin": "alpha"})["state"] == "stopped"

    with SupervisorProc(home) as sup:
        filler = _fill(tiny_log_dir)
        for _ in range(100):  # until the last page of the open file is used up too
            cycle()
            if metric_value(scrape_metrics(home), sample) >= 1:
                break
        assert metric_value(scrape_metrics(home), sample) >= 1
        assert sup.call("ping")["ok"] is True
        before = log.read_text().count("plugin enabled")
        filler.unlink()

        def resumed() -> bool:
            cycle()
            return log.read_text().count("plugin enabled") > before

        wait_for(resumed)
    assert sup.proc is not None and sup.proc.returncode == 0


def test_a_removed_log_directory_is_recreated(home):
    make_plugin(home / "plugins", "alpha")
    with SupervisorProc(home) as sup:
        sup.call("enable", {"plugin": "alpha"})
        pid = sup.wait_state("alpha", "running")["pid"]
        _say(sup, "/alpha", "before")
        wait_for(lambda: _logged(sup, "alpha", "before"))
        subprocess.run(["rm", "-rf", str(home / "var" / "log" / "plugins")], check=True)
        # Without the inode check the writer keeps appending to the unlinked file forever.
        _wait_logged_again(sup, "alpha", "after")
        assert (home / "var" / "log" / "plugins" / "alpha.log").exists()
        assert sup.info("alpha")["pid"] == pid


# ---------------------------------------------------------------------------- unit


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_writer_never_raises_counts_and_recovers(tmp_path):
    blocker = tmp_path / "logs"
    blocker.write_text("a file where the directory should be")  # ENOTDIR/EEXIST on open
    errors: list[OSError] = []
    clock = _Clock()
    w = LogWriter(blocker / "x.log", on_error=errors.append, clock=clock)
    w.write({"message": "dropped"})
    w.flush()
    assert len(errors) == 1 and w.failing
    w.write({"message": "dropped too, without another attempt"})
    assert len(errors) == 1  # retried at most once a second
    blocker.unlink()
    clock.now += 1.5
    w.write({"message": "kept"})
    w.flush()
    assert not w.failing
    assert (blocker / "x.log").read_text().count("\n") == 1
    w.close()


def test_writer_flush_errors_on_dev_full_are_counted(tmp_path):
    path = tmp_path / "full.log"
    path.symlink_to("/dev/full")  # every write: ENOSPC
    errors: list[OSError] = []
    w = LogWriter(path, on_error=errors.append, clock=_Clock())
    w.write({"message": "x"})
    w.flush()
    w.close()
    assert errors and all(e.errno == 28 for e in errors)


def test_writer_counts_eacces_as_an_unprivileged_user(tmp_path):
    """EACCES for real: a forked child drops to nobody and writes into a root-owned dir."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    tmp_path.chmod(0o755)
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        code = 1
        try:
            os.setgid(65534)
            os.setuid(65534)
            errors: list[OSError] = []
            w = LogWriter(locked / "x.log", on_error=errors.append, clock=_Clock())
            w.write({"message": "x"})
            w.flush()
            code = 0 if [e.errno for e in errors] == [13] and w.failing else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
