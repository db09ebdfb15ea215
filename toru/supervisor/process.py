"""One plugin OS process: spawn, output capture, race-free exit detection, group kill.

- Own session and process group (``start_new_session``), so a terminal's Ctrl-C does not
  hit plugins directly and ``killpg`` reaches any grandchild the plugin forked.
- ``PR_SET_PDEATHSIG(SIGKILL)`` in the child before exec: if the supervisor dies, even by
  ``kill -9``, the kernel kills the plugin. It fires when the *thread* that forked dies, so
  plugins are spawned from the event loop thread only. A child whose parent already died
  before the ``prctl`` exits at once.
- Exit is detected with ``os.pidfd_open`` + the loop's reader: no SIGCHLD handler, no race
  with pid reuse. Before reaping, the group gets SIGKILL while the zombie still pins the
  process-group id, so leftover grandchildren die with their plugin.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from toru.osutil import die_with_parent

from .cgroups import PluginCgroup
from .identity import Identity, switch_to
from .logs import MAX_LINE

OutputCallback = Callable[[str, list[bytes]], None]


def _child_setup(
    parent_pid: int, cgroup: PluginCgroup | None, identity: Identity | None
) -> Callable[[], None]:
    def setup() -> None:  # runs in the forked child before exec: no allocation-heavy work
        if cgroup is not None:
            cgroup.join()  # before anything can fork: every descendant is in the cgroup
        if identity is not None:
            switch_to(identity)  # after the join (Toru's rights), before PDEATHSIG (cleared)
        die_with_parent(signal.SIGKILL, parent_pid)

    return setup


def exit_reason(proc: Any) -> str:
    """The crash reason of a plugin that exited by itself: "memory limit" when the OOM
    killer acted in its cgroup, else "exited"."""
    return "memory limit" if getattr(proc, "oom_killed", False) else "exited"


def describe_exit(returncode: int) -> dict[str, Any]:
    """``{"exit_code": n}`` or ``{"signal": "SIGKILL"}`` for event details."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return {"signal": name}
    return {"exit_code": returncode}


class _LineReader(asyncio.Protocol):
    """Splits a pipe into lines; an over-long line is cut at ``MAX_LINE``."""

    def __init__(self, stream: str, on_output: OutputCallback) -> None:
        self.stream = stream
        self.on_output = on_output
        self.buf = b""
        self.skipping = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        lines = buf.split(b"\n")
        self.buf = lines.pop()
        if self.skipping and lines:
            lines.pop(0)  # the tail of a line already emitted truncated
            self.skipping = False
        if len(self.buf) > MAX_LINE:
            if not self.skipping:
                lines.append(self.buf[:MAX_LINE])
            self.buf = b""
            self.skipping = True
        if lines:
            self.on_output(self.stream, [ln for ln in lines if ln.strip()])

    def connection_lost(self, exc: Exception | None) -> None:
        if self.buf.strip() and not self.skipping:
            self.on_output(self.stream, [self.buf])
        self.buf = b""
        if not self.closed.done():
            self.closed.set_result(None)


class PluginProcess:
    """A running plugin executable. ``exited`` resolves to its return code (-N = signal N)."""

    def __init__(
        self,
        popen: subprocess.Popen[bytes],
        loop: asyncio.AbstractEventLoop,
        cgroup: PluginCgroup | None = None,
    ) -> None:
        self.popen = popen
        self.cgroup = cgroup
        self.pid = popen.pid
        self.loop = loop
        self.exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = os.pidfd_open(self.pid)
        loop.add_reader(self._pidfd, self._on_exit)
        self._pipes: list[asyncio.BaseTransport] = []
        self._readers: list[_LineReader] = []

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        env: dict[str, str],
        cwd: str,
        on_output: OutputCallback,
        pass_fds: Sequence[int] = (),
        cgroup: PluginCgroup | None = None,
        identity: Identity | None = None,
    ) -> PluginProcess:
        """Start the executable (in ``cgroup`` and as ``identity`` if given); raises
        ``OSError`` if it cannot be executed at all."""
        loop = asyncio.get_running_loop()
        switch = identity if identity is not None and not identity.is_self else None
        try:
            popen = subprocess.Popen(
                list(argv),
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=tuple(pass_fds),
                start_new_session=True,
                preexec_fn=_child_setup(os.getpid(), cgroup, switch),  # NOTE: loop thread
                close_fds=True,
            )
        except subprocess.SubprocessError as exc:  # cgroup join or identity switch failed
            how = [f"in its cgroup {cgroup.path}"] if cgroup is not None else []
            how += [f"as {switch.describe()}"] if switch is not None else []
            raise OSError(f"cannot start it {' '.join(how)}: {exc}") from None
        proc = cls(popen, loop, cgroup)
        for stream, pipe in (("stdout", popen.stdout), ("stderr", popen.stderr)):
            reader = _LineReader(stream, on_output)
            transport, _ = await loop.connect_read_pipe(lambda r=reader: r, pipe)
            proc._pipes.append(transport)
            proc._readers.append(reader)
        return proc

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def _on_exit(self) -> None:
        self.loop.remove_reader(self._pidfd)
        self.signal_group(signal.SIGKILL)  # leftovers of the group, while the zombie pins it
        try:
            _, status = os.waitpid(self.pid, 0)
            code = os.waitstatus_to_exitcode(status)
        except ChildProcessError:  # pragma: no cover - someone else reaped it
            code = -1
        self.popen.returncode = code  # so Popen never tries to reap it again
        os.close(self._pidfd)
        self._pidfd = -1
        if not self.exited.done():
            self.exited.set_result(code)

    @property
    def oom_killed(self) -> bool:
        """True when the OOM killer acted in the plugin's cgroup (its memory limit)."""
        return self.cgroup is not None and self.cgroup.oom_killed

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the plugin's whole process group (no-op once reaped); SIGKILL also
        goes to its whole cgroup, which reaches descendants that left the group."""
        if sig == signal.SIGKILL and self.cgroup is not None:
            self.cgroup.kill()
        if self.exited.done():
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    async def wait(self, timeout: float | None = None) -> int | None:
        """The return code, or ``None`` if still running after ``timeout``."""
        try:
            return await asyncio.wait_for(asyncio.shield(self.exited), timeout)
        except TimeoutError:
            return None

    async def terminate(self, grace: float) -> int:
        """SIGTERM the group, SIGKILL after ``grace``; returns the code. Safe to call twice."""
        if self.running:
            self.signal_group(signal.SIGTERM)
            if await self.wait(grace) is None:
                self.signal_group(signal.SIGKILL)
        code = await asyncio.shield(self.exited)
        await self.drain_output(0.5)
        return code

    async def drain_output(self, timeout: float) -> None:
        """Wait a little for the pipes' last lines (they close when the group is gone)."""
        pending = [r.closed for r in self._readers if not r.closed.done()]
        if pending:
            await asyncio.wait(pending, timeout=timeout)
        for t in self._pipes:
            t.close()
        if self.cgroup is not None:
            await self.cgroup.release()
