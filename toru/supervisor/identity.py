"""Who plugins run as: an unprivileged identity, never Toru's own keys.

- ``plugins.user`` / ``plugins.group`` name it. Unset and Toru is root: the system user
  ``toru-plugin``, created here if missing (``useradd --system``); if that fails, ``nobody``
  with a logged warning. Unset and Toru is not root: Toru's own uid (isolation is then by
  file modes only: a plugin can signal Toru's processes and read what Toru's user can).
- ``plugins.isolation = "per-plugin"``: every plugin gets a uid of its own from
  ``plugins.uid_range`` (gid = the same number, no passwd entry), chosen from a hash of its id
  and recorded in ``var/plugin-uids.json`` so it never changes across restarts. The shared
  identity still runs ``--metadata`` probes (the id is not known before them).

The switch happens in the forked child before ``exec`` (``switch_to``), after the child joined
its cgroup (which needs Toru's rights) and before ``PR_SET_PDEATHSIG`` (which the kernel clears
on a uid change).
"""

from __future__ import annotations

import grp
import hashlib
import json
import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toru.atomic_write import replace_file
from toru.osutil import drop_capabilities

DEFAULT_USER = "toru-plugin"
FALLBACK_USER = "nobody"
USERADD = ("--system", "--no-create-home", "--shell", "/usr/sbin/nologin")


class IdentityError(ValueError):
    """``plugins.user`` / ``plugins.group`` / the uid range cannot be used."""


@dataclass(frozen=True)
class Identity:
    """A uid/gid pair a plugin process runs as, and a name for logs."""

    uid: int
    gid: int
    name: str

    @property
    def is_self(self) -> bool:
        """True when this is Toru's own identity (nothing to switch)."""
        return self.uid == os.geteuid() and self.gid == os.getegid()

    def describe(self) -> str:
        return f"{self.name} (uid {self.uid}, gid {self.gid})"


def switch_to(identity: Identity) -> None:
    """In the forked child before exec: drop every supplementary group, then gid, then uid,
    then every capability (systemd's ``AmbientCapabilities=`` of a non-root Toru).

    NOTE: real, effective and saved ids all change, so the plugin cannot switch back.
    """
    os.setgroups([])
    os.setresgid(identity.gid, identity.gid, identity.gid)
    os.setresuid(identity.uid, identity.uid, identity.uid)
    drop_capabilities()


# capability(7) bit numbers
CAPS_TO_RUN_AS_ANOTHER_USER = {
    "CAP_SETUID": 7,  # switch to the plugin's uid
    "CAP_SETGID": 6,  # and gid
    "CAP_CHOWN": 0,  # give it its socket directory
    "CAP_DAC_OVERRIDE": 1,  # connect to the 0600 socket inside
    "CAP_KILL": 5,  # stop its processes (without it a SIGTERM/SIGKILL is refused)
}


def missing_capabilities() -> list[str]:
    """What this process lacks to run plugins as another user (none when root)."""
    if os.geteuid() == 0:
        return []
    try:
        status = Path("/proc/self/status").read_text()
        eff = int(next(ln for ln in status.splitlines() if ln.startswith("CapEff:")).split()[1], 16)
    except (OSError, StopIteration, ValueError):
        eff = 0
    return [name for name, bit in CAPS_TO_RUN_AS_ANOTHER_USER.items() if not eff >> bit & 1]


def lookup_user(spec: str) -> pwd.struct_passwd | None:
    """The passwd entry of a user name or a numeric uid, or None."""
    try:
        return pwd.getpwuid(int(spec)) if spec.isdigit() else pwd.getpwnam(spec)
    except KeyError:
        return None


def _lookup_gid(spec: str) -> int:
    if spec.isdigit():
        return int(spec)
    try:
        return grp.getgrnam(spec).gr_gid
    except KeyError:
        raise IdentityError(f"plugins.group {spec!r}: no such group") from None


def create_system_user(name: str) -> str | None:
    """``useradd --system`` ``name``; None on success, else why not."""
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    try:
        done = subprocess.run([useradd, *USERADD, name], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if done.returncode != 0 and lookup_user(name) is None:
        return done.stderr.strip() or f"useradd exited with {done.returncode}"
    return None


def shared_identity(user: str | None, group: str | None, warn: Callable[[str], None]) -> Identity:
    """The identity every plugin runs as in ``shared`` isolation (see the module docstring).

    Raises ``IdentityError`` when a configured user or group does not exist.
    """
    if user is None and os.geteuid() != 0:
        gid = _lookup_gid(group) if group else os.getegid()
        entry = lookup_user(str(os.geteuid()))
        return Identity(os.geteuid(), gid, entry.pw_name if entry else str(os.geteuid()))
    if user is None:
        entry = lookup_user(DEFAULT_USER)
        if entry is None:
            why = create_system_user(DEFAULT_USER)
            entry = lookup_user(DEFAULT_USER)
            if entry is None:
                warn(
                    f"cannot create the system user {DEFAULT_USER} ({why}); plugins run as "
                    f"{FALLBACK_USER}, which other services may share"
                )
                entry = lookup_user(FALLBACK_USER)
        if entry is None:
            raise IdentityError(f"neither {DEFAULT_USER} nor {FALLBACK_USER} exists")
    else:
        entry = lookup_user(user)
        if entry is None:
            if not user.isdigit():
                raise IdentityError(f"plugins.user {user!r}: no such user")
            uid = int(user)  # a bare uid needs no passwd entry
            return Identity(uid, _lookup_gid(group) if group else uid, user)
    gid = _lookup_gid(group) if group else entry.pw_gid
    return Identity(entry.pw_uid, gid, entry.pw_name)


class PerPluginUids:
    """One uid per plugin id from a range, stable across restarts (``var/plugin-uids.json``).

    The first choice is ``first + sha256(id) % size``; a uid already held by another plugin or
    by an account in the passwd database is skipped (the next one is tried).
    """

    def __init__(self, path: Path, uid_range: tuple[int, int]) -> None:
        self.path = path
        self.first, self.last = uid_range
        self.assigned: dict[str, int] = {}
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                self.assigned = {str(k): int(v) for k, v in data.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, TypeError) as exc:
            raise IdentityError(f"{path} is unreadable ({exc}); fix or remove it") from None

    def uid_for(self, plugin_id: str) -> int:
        """This plugin's uid, handing out (and recording) a new one the first time."""
        uid = self.assigned.get(plugin_id)
        if uid is not None:
            return uid
        size = self.last - self.first + 1
        taken = set(self.assigned.values())
        start = int.from_bytes(hashlib.sha256(plugin_id.encode()).digest()[:8], "big") % size
        for step in range(size):
            candidate = self.first + (start + step) % size
            if candidate not in taken and lookup_user(str(candidate)) is None:
                break
        else:
            raise IdentityError(f"plugins.uid_range {self.first}-{self.last} is exhausted")
        self.assigned[plugin_id] = candidate
        replace_file(self.path, json.dumps(self.assigned, indent=1, sort_keys=True) + "\n")
        return candidate


class PluginIdentities:
    """The identity each plugin runs as (``for_plugin``) and the one ``--metadata`` runs as."""

    def __init__(self, shared: Identity, per_plugin: PerPluginUids | None = None) -> None:
        self.shared = shared
        self.per_plugin = per_plugin

    def for_plugin(self, plugin_id: str) -> Identity:
        if self.per_plugin is None:
            return self.shared
        uid = self.per_plugin.uid_for(plugin_id)
        return Identity(uid, uid, f"{plugin_id}:{uid}")

    def describe(self) -> str:
        if self.per_plugin is None:
            how = "plugins run as " + self.shared.describe()
            if self.shared.is_self:
                how += ": Toru's own user, so they are kept apart from Toru by file modes only"
            return how
        p = self.per_plugin
        return (
            f"each plugin runs as a uid of its own from {p.first}-{p.last} "
            f"(--metadata probes as {self.shared.describe()})"
        )


def resolve(
    user: str | None,
    group: str | None,
    isolation: str,
    uid_range: tuple[int, int],
    uids_file: Path,
    warn: Callable[[str], None],
) -> PluginIdentities:
    """The plugins' identities from the settings; raises ``IdentityError``."""
    shared = shared_identity(user, group, warn)
    if isolation != "per-plugin":
        return PluginIdentities(shared)
    return PluginIdentities(shared, PerPluginUids(uids_file, uid_range))
