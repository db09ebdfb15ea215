"""``plugins/.metadata/config.json``: which plugins are enabled, surviving restarts.

Written atomically (temp file in the same directory, fsync, rename, fsync of the directory)
so a crash mid-write leaves either the old or the new file, never half of one. The CLI edits
the same file when no supervisor runs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1


def load_state(path: Path) -> dict[str, dict[str, Any]]:
    """``{plugin_id: {"enabled": bool, ...}}``; a missing or unreadable file is empty.

    Accepts the original flat form ``{"id": {"enabled": true}}`` too.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    plugins = data.get("plugins", data) if "version" in data else data
    if not isinstance(plugins, dict):
        return {}
    out: dict[str, dict[str, Any]] = {}
    for pid, entry in plugins.items():
        if isinstance(entry, dict):
            out[str(pid)] = {**entry, "enabled": bool(entry.get("enabled", False))}
        elif isinstance(entry, bool):
            out[str(pid)] = {"enabled": entry}
    return out


def save_state(path: Path, plugins: dict[str, dict[str, Any]]) -> None:
    """Atomically replace the file with ``plugins``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"version": FORMAT_VERSION, "plugins": plugins}, indent=2, sort_keys=True)
    fd, tmp = tempfile.mkstemp(prefix=".config.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(body + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def set_enabled(path: Path, plugin_id: str, enabled: bool, **extra: Any) -> None:
    """Read-modify-write one plugin's entry."""
    state = load_state(path)
    entry = state.get(plugin_id, {})
    entry.update(extra)
    entry["enabled"] = enabled
    state[plugin_id] = entry
    save_state(path, state)
