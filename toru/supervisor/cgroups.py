"""One cgroup (v2) per plugin, where the machine allows it: nothing a plugin starts survives it.

Layout: ``<the supervisor's own cgroup>/toru-<hash of the home>/<plugin id>``. The plugin joins
its cgroup in the forked child before ``exec`` (so even its first fork is inside), and
stopping it ends with ``cgroup.kill``: every process in the cgroup gets SIGKILL, including a
grandchild that called ``setsid()`` and so left the plugin's process group. A supervisor
killed with SIGKILL cannot do that; its plugins die by ``PR_SET_PDEATHSIG`` and the next
supervisor of the same home kills whatever is left in the home's cgroups before it starts any
plugin (``toru serve`` restarts the supervisor, so that happens within seconds).

Limits (``[plugins.<id>.limits]`` in toru.toml) are written to ``memory.max``, ``pids.max`` and
``cpu.max`` when those controllers can be enabled for the home's cgroup; else they are
reported as unavailable (in ``get`` and once in the log), never silently ignored. A plugin
killed by the OOM killer inside its cgroup (``memory.events`` ``oom_kill``) crashes with the
reason "memory limit".

Without a writable cgroup v2 hierarchy (no cgroup2 mount, an old kernel without
``cgroup.kill``, not root and no systemd ``Delegate=yes``) plugins fall back to process groups
(``process.py``); ``probe()`` says why, for the log and ``toru doctor``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toru.config import LIMIT_CONTROLLERS, PluginLimits

RELEASE_WAIT = 2.0  # seconds to wait for a killed cgroup to empty before removing it


@dataclass(frozen=True)
class CgroupSupport:
    """Whether per-plugin cgroups work here, and a human reason either way."""

    available: bool
    reason: str
    base: Path | None = None  # this process's own cgroup directory (cgroup v2)
    controllers: frozenset[str] = frozenset()  # controllers present in ``base``


def cgroup2_mount(mountinfo: str) -> Path | None:
    """The mount point of the cgroup v2 hierarchy in ``/proc/self/mountinfo`` text."""
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        if sep and tail.split(" ", 1)[0] == "cgroup2":
            return Path(head.split(" ")[4].replace("\\040", " "))
    return None


def own_cgroup(proc_cgroup: str) -> str | None:
    """This process's cgroup v2 path (the ``0::/path`` line of ``/proc/self/cgroup``)."""
    for line in proc_cgroup.splitlines():
        if line.startswith("0::"):
            return line[3:].strip()
    return None


def probe() -> CgroupSupport:
    """Can this process give each plugin its own cgroup? Reads only, changes nothing."""
    try:
        mount = cgroup2_mount(Path("/proc/self/mountinfo").read_text())
        rel = own_cgroup(Path("/proc/self/cgroup").read_text())
    except OSError as exc:
        return CgroupSupport(False, f"cannot read /proc/self: {exc.strerror}")
    if mount is None:
        return CgroupSupport(False, "no cgroup v2 hierarchy is mounted")
    if rel is None:
        return CgroupSupport(False, "this process is not in the cgroup v2 hierarchy")
    base = mount / rel.lstrip("/")
    # The root cgroup has no cgroup.kill of its own (it cannot be killed); its children do.
    if not ((base / "cgroup.kill").exists() or (rel == "/" and _kernel_at_least(5, 14))):
        return CgroupSupport(False, f"{base} has no cgroup.kill (needs Linux 5.14 or later)")
    if not os.access(base, os.W_OK) or not os.access(base / "cgroup.procs", os.W_OK):
        return CgroupSupport(
            False, f"{base} is not writable (run as root, or under systemd with Delegate=yes)"
        )
    controllers = frozenset(_read(base / "cgroup.controllers").split())
    return CgroupSupport(True, f"cgroup v2 at {base}", base, controllers)


def home_cgroup(home: Path, support: CgroupSupport | None = None) -> Path | None:
    """The cgroup directory a supervisor of ``home`` uses (None without cgroup support)."""
    support = support or probe()
    if not support.available or support.base is None:
        return None
    return support.base / f"toru-{hashlib.sha256(str(home).encode()).hexdigest()[:12]}"


class PluginCgroups:
    """The home's cgroup and its per-plugin children (one supervisor per home owns them)."""

    def __init__(
        self, parent: Path, controllers: frozenset[str], limits: Mapping[str, Any], log: Any
    ) -> None:
        self.log = log  # SupervisorLog
        self.parent = parent
        self.controllers = controllers  # enabled for the plugins' cgroups
        self.limits: Mapping[str, PluginLimits] = limits
        self.missing: dict[str, str] = {}  # controller -> why its limits cannot be applied

    @classmethod
    def open(
        cls, home: Path, limits: Mapping[str, PluginLimits], log: Any, enabled: bool = True
    ) -> tuple[PluginCgroups | None, str]:
        """Set up the home's cgroup and kill leftovers of a killed predecessor. Returns the
        cgroups, or None (logged once) when the machine does not allow it or ``enabled`` is
        false (setting ``supervisor.cgroups``), and the reason."""
        support = probe() if enabled else CgroupSupport(False, "turned off: supervisor.cgroups")
        parent = home_cgroup(home, support)
        if parent is not None:
            try:
                parent.mkdir(exist_ok=True)
            except OSError as exc:
                support = CgroupSupport(False, f"cannot create {parent}: {exc.strerror}")
        if not support.available:
            log.info(
                f"plugins run without their own cgroups ({support.reason}): they are stopped "
                "by process group, so a grandchild that calls setsid() can outlive its plugin"
            )
            return None, support.reason
        assert parent is not None and support.base is not None
        controllers, missing = _enable_controllers(support.base, parent)
        cgroups = cls(parent, controllers, limits, log)
        cgroups.missing = missing
        killed = cgroups.kill_leftovers()
        if killed:
            log.warn(f"killed {killed} leftover plugin processes of a previous supervisor")
        wanted = {c for lim in limits.values() for c in lim.controllers()}
        for c in sorted(wanted - controllers):
            log.warn(f"plugin {c} limits are not enforced: {missing.get(c, 'unavailable')}")
        log.info(f"each plugin runs in its own cgroup under {parent}")
        return cgroups, support.reason

    def kill_leftovers(self) -> int:
        """``cgroup.kill`` and remove every plugin cgroup left here; how many processes died."""
        count = 0
        for child in _children(self.parent):
            count += len(_read(child / "cgroup.procs").split())
            PluginCgroup(child).kill()
            _wait_empty_sync(child, RELEASE_WAIT)
            _rmdir(child)
        return count

    def for_plugin(self, plugin_id: str, instance: int = 0) -> PluginCgroup | None:
        """A fresh cgroup for one start of ``plugin_id`` with its limits written; None (logged)
        if it cannot be made, and the plugin then runs in its process group only.

        ``instance`` > 0 is an upgrade's new process, started beside the old one: its own
        cgroup (``<id>.<instance>``), so setting it up never kills the one still serving."""
        path = self.parent / _instance_name(plugin_id, instance)
        try:
            if path.exists():  # a previous run's that could not be removed yet
                PluginCgroup(path).kill()
                _wait_empty_sync(path, RELEASE_WAIT)
            else:
                path.mkdir()
            cgroup = PluginCgroup(path)
        except OSError as exc:
            self.log.error(f"cannot set up the cgroup {path}", plugin_id, error=str(exc))
            return None
        lim = self.limits.get(plugin_id)
        if lim is not None:
            for name, exc in cgroup.apply(lim, self.controllers):
                self.log.error(f"cannot apply the plugin's {name}", plugin_id, error=str(exc))
        return cgroup

    def describe(self, plugin_id: str, instance: int = 0) -> dict[str, Any]:
        """The ``cgroup`` part of the control op ``get``: where, and each limit's fate."""
        lim = self.limits.get(plugin_id)
        return {
            "path": str(self.parent / _instance_name(plugin_id, instance)),
            "limits": describe_limits(lim, self.controllers, self.missing),
        }

    def close(self) -> None:
        """At shutdown, after every plugin stopped: remove what is left (idempotent)."""
        self.kill_leftovers()
        _rmdir(self.parent)


def _instance_name(plugin_id: str, instance: int) -> str:
    """``<id>`` for a plugin's first instance, ``<id>.<n>`` after upgrades (ids have no dot)."""
    return plugin_id if instance == 0 else f"{plugin_id}.{instance}"


def describe_limits(
    lim: PluginLimits | None, controllers: frozenset[str], missing: Mapping[str, str]
) -> dict[str, Any]:
    """``{name: {"value", "enforced", "reason"?}}`` for each configured limit."""
    out: dict[str, Any] = {}
    if lim is None:
        return out
    for name, value in lim.items():
        controller = LIMIT_CONTROLLERS[name]
        if controller in controllers:
            out[name] = {"value": value, "enforced": True}
        else:
            why = missing.get(controller) or f"the {controller} controller is not available"
            out[name] = {"value": value, "enforced": False, "reason": why}
    return out


def without_cgroups(reason: str, lim: PluginLimits | None) -> dict[str, Any]:
    """The ``cgroup`` part of ``get`` when plugins run in process groups only."""
    missing = {c: f"no per-plugin cgroups ({reason})" for c in LIMIT_CONTROLLERS.values()}
    return {"path": None, "reason": reason, "limits": describe_limits(lim, frozenset(), missing)}


class PluginCgroup:
    """One plugin's cgroup directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Encoded up front: ``join`` runs in the forked child, where little should allocate.
        self._procs = os.fsencode(path / "cgroup.procs")
        self._oom_base = self.oom_kills()
        self._oom_at_release: bool | None = None  # memory.events is gone with the directory

    def join(self) -> None:
        """In the forked child before exec: move this process into the cgroup."""
        fd = os.open(self._procs, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)

    def apply(self, lim: PluginLimits, controllers: frozenset[str]) -> list[tuple[str, OSError]]:
        """Write the limits whose controller is enabled (an OOM kill takes the whole cgroup);
        the ones the kernel refused."""
        failed = []
        for name, value in lim.items():
            if LIMIT_CONTROLLERS[name] not in controllers:
                continue
            try:
                (self.path / name.replace("_", ".")).write_text(value)
            except OSError as exc:
                failed.append((name, exc))
                continue
            if name == "memory_max":
                _write_if_present(self.path / "memory.swap.max", "0")  # no swapping out
                _write_if_present(self.path / "memory.oom.group", "1")
        return failed

    def kill(self) -> None:
        """SIGKILL every process in the cgroup (``cgroup.kill``); harmless when empty or gone."""
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            pass

    def oom_kills(self) -> int:
        """``oom_kill`` of ``memory.events`` (0 without the memory controller)."""
        for line in _read(self.path / "memory.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    @property
    def oom_killed(self) -> bool:
        """Did the OOM killer act in this cgroup since it was set up for this start?"""
        if self._oom_at_release is not None:
            return self._oom_at_release
        return self.oom_kills() > self._oom_base

    async def release(self) -> None:
        """Kill what is left, wait (bounded) until the cgroup is empty, remove it."""
        self.kill()
        deadline = time.monotonic() + RELEASE_WAIT
        while _populated(self.path) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._oom_at_release is None:
            self._oom_at_release = self.oom_killed
        _rmdir(self.path)


def _kernel_at_least(major: int, minor: int) -> bool:
    try:
        parts = os.uname().release.split(".")
        return (int(parts[0]), int(parts[1].split("-")[0])) >= (major, minor)
    except (ValueError, IndexError):
        return False


def _enable_controllers(base: Path, parent: Path) -> tuple[frozenset[str], dict[str, str]]:
    """Enable memory/pids/cpu for the plugins' cgroups where possible: what got enabled, and
    for each controller that did not, why.

    ``base`` may need them in its own ``cgroup.subtree_control`` first; that write fails
    (EBUSY) when ``base`` holds processes and is not the root cgroup (cgroup v2's
    no-internal-processes rule), and then the controller stays unavailable.
    """
    wanted = set(LIMIT_CONTROLLERS.values())
    why: dict[str, str] = {}
    for directory in (base, parent):
        present = set(_read(directory / "cgroup.controllers").split())
        enabled = set(_read(directory / "cgroup.subtree_control").split())
        for c in sorted(wanted - present):
            why.setdefault(c, f"the {c} controller is not in {directory}/cgroup.controllers")
        for c in sorted((wanted & present) - enabled):
            try:
                (directory / "cgroup.subtree_control").write_text(f"+{c}")
            except OSError as exc:
                why.setdefault(
                    c,
                    f"cannot enable the {c} controller in {directory}/cgroup.subtree_control "
                    f"({exc.strerror}; a cgroup that holds processes cannot pass controllers on)",
                )
    enabled_now = frozenset(_read(parent / "cgroup.subtree_control").split()) & wanted
    return enabled_now, {c: r for c, r in why.items() if c not in enabled_now}


def _children(path: Path) -> list[Path]:
    try:
        return [p for p in path.iterdir() if p.is_dir()]
    except OSError:
        return []


def _populated(path: Path) -> bool:
    return "populated 1" in _read(path / "cgroup.events")


def _wait_empty_sync(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while _populated(path) and time.monotonic() < deadline:
        time.sleep(0.01)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write_if_present(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError:
        pass


def _rmdir(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
