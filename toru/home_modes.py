"""File modes of a Toru home: private to Toru, reachable by plugins only where they must be.

Everything Toru creates is made under umask 077 (``set_private_umask``, at the start of every
command that writes to a home). A home made by an older Toru (files 0644 in a 0755 ``var/``)
is tightened at start (``tighten_home``): group and other lose every bit on ``var/`` and
what is in it (database, WAL, SHM, logs, metrics, initial-admin-password), the log directory,
``plugins/.metadata/`` (config.json) and ``toru.toml``; the caller logs what changed.

Plugins run as another uid (toru/supervisor/identity.py), so they need to traverse exactly
two paths (``open_for_plugins``): ``run/`` and ``run/p/`` get ``--x`` for others (0711: no
listing; every socket and file in ``run/`` is owner-only), so a plugin reaches its own
``run/p/<id>/`` (0700, its own); the home and the plugin directory get ``o+x`` so it can
execute its binary. Nothing else of the home is opened to it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

from toru.config import Config

PRIVATE_UMASK = 0o077
GROUP_OTHER = 0o077
TRAVERSE = 0o011  # --x for group and others


def set_private_umask() -> None:
    """umask 077: files 0600 and directories 0700 unless Toru says otherwise."""
    os.umask(PRIVATE_UMASK)


def _walk(root: Path) -> Iterator[Path]:
    """``root`` and everything below it, symlinks not followed (their targets are not ours)."""
    if not root.exists() or root.is_symlink():
        return
    yield root
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                yield path


def _set_mode(path: Path, clear: int, add: int = 0) -> str | None:
    """Clear then add permission bits; ``"path 0644->0600"`` if the mode changed, or why it
    could not (a file Toru's user does not own, say one a root shell left)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    old = stat.S_IMODE(st.st_mode)
    new = (old & ~clear) | add
    if new == old:
        return None
    try:
        os.chmod(path, new)
    except OSError as exc:
        return f"{path} {old:04o} left as it is ({exc.strerror}; owner uid {st.st_uid})"
    return f"{path} {old:04o}->{new:04o}"


def tighten_home(config: Config) -> list[str]:
    """Take group and other access off Toru's private files; what changed (see the module
    docstring). ``run/`` and ``run/p/`` keep their ``x`` bits (``open_for_plugins`` owns
    them); a plugin's own ``run/p/<id>/`` is left to the launcher."""
    changes: list[str] = []
    private: list[Path] = [*_walk(config.var_dir), *_walk(config.log_dir)]
    private += [*_walk(config.state_file.parent), config.home / "toru.toml"]
    for path in dict.fromkeys(private):  # log_dir is usually inside var/
        if (change := _set_mode(path, GROUP_OTHER)) is not None:
            changes.append(change)
    for directory in (config.run_dir, config.plugin_socket_dir):
        if (change := _set_mode(directory, GROUP_OTHER & ~TRAVERSE)) is not None:
            changes.append(change)
    if config.run_dir.is_dir():
        for entry in config.run_dir.iterdir():
            change = None if entry == config.plugin_socket_dir else _set_mode(entry, GROUP_OTHER)
            if change is not None:
                changes.append(change)
    return changes


def open_for_plugins(config: Config, apart: bool) -> list[str]:
    """Let a plugin user other than Toru's (``apart``) reach its socket directory and its
    binary, or close ``run/`` again when plugins run as Toru's own user. What changed."""
    changes = []
    for directory in (config.run_dir, config.plugin_socket_dir):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        change = _set_mode(directory, 0o777, 0o700 | (TRAVERSE if apart else 0))
        if change is not None:
            changes.append(change)
    if apart:
        for directory in _owned_ancestors(config.plugins_dir, config.home):
            if (change := _set_mode(directory, 0, 0o001)) is not None:
                changes.append(change)
    return changes


def _owned_ancestors(plugins_dir: Path, home: Path) -> list[Path]:
    """The plugin directory and its parents up to and including the home, when it is in the
    home (a directory elsewhere is the operator's to open: the supervisor warns about it)."""
    try:
        rel = plugins_dir.relative_to(home)
    except ValueError:
        return []
    out = [home]
    for part in rel.parts:
        out.append(out[-1] / part)
    return out


def unreachable(path: Path, uid: int, gid: int) -> Path | None:
    """The first directory on the way to ``path`` that ``uid``/``gid`` cannot traverse (by
    mode bits; root bypasses them, so it is never asked about), or None."""
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except OSError:
            return directory
        mode = st.st_mode
        if st.st_uid == uid:
            ok = mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = mode & stat.S_IXGRP
        else:
            ok = mode & stat.S_IXOTH
        if not ok:
            return directory
    return None
