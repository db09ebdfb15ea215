"""``var/supervisor-state.json``: what the supervisor remembers across its own restarts.

Two things a restart must not forget: the last good ``--metadata`` of each binary (keyed by
path, kept only while the file's signature ``(mtime_ns, size)`` is unchanged), so a restart
on a loaded machine needs no metadata probe of a known binary; and each plugin's
consecutive-failure count, so a crash loop does not get ``max_failures`` fresh tries after
every supervisor restart.

The file is the supervisor's alone and written atomically (temp file, fsync, rename). A
missing or unreadable file is an empty memory: the supervisor then behaves as on a first
start, it never refuses to run over it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toru.atomic_write import replace_file
from toru_plugin_api.codec import ProtocolError
from toru_plugin_api.messages import PluginMetadata

FORMAT_VERSION = 1
Signature = tuple[int, int]


def read_json_object(path: Path) -> tuple[dict[str, Any], str | None]:
    """The JSON object in one of the supervisor's own files: ``({}, None)`` when the file is
    missing, ``({}, why)`` when it cannot be read or holds no JSON object."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        return {}, f"{path}: {exc}"
    if not isinstance(data, dict):
        return {}, f"{path}: not a JSON object"
    return data, None


class SupervisorState:
    """Load once at start; every change is written through at once (changes are rare)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metadata: dict[str, dict[str, Any]] = {}
        self.failures: dict[str, int] = {}
        self.load_error: str | None = None
        self._load()

    def _load(self) -> None:
        data, self.load_error = read_json_object(self.path)
        meta = data.get("metadata")
        if isinstance(meta, dict):
            self.metadata = {k: v for k, v in meta.items() if isinstance(v, dict)}
        fails = data.get("failures")
        if isinstance(fails, dict):
            self.failures = {
                k: v for k, v in fails.items() if type(v) is int and v > 0 and isinstance(k, str)
            }

    # ------------------------------------------------------------------ metadata

    def known_metadata(self, binary: Path, signature: Signature) -> PluginMetadata | None:
        """The last good metadata of ``binary`` if the file is unchanged since, else None."""
        entry = self.metadata.get(str(binary))
        if entry is None or entry.get("signature") != list(signature):
            return None
        try:
            return PluginMetadata.from_json(entry.get("metadata"))
        except ProtocolError:
            return None

    def last_metadata(self, binary: Path) -> PluginMetadata | None:
        """The last good metadata of ``binary`` whatever the file holds now (what a plugin
        whose binary changed and waits for approval is listed as)."""
        entry = self.metadata.get(str(binary))
        try:
            return PluginMetadata.from_json(entry.get("metadata")) if entry else None
        except ProtocolError:
            return None

    def forget(self, binary: Path) -> None:
        """Forget one binary's metadata: its next rescan probes it again."""
        if self.metadata.pop(str(binary), None) is not None:
            self.save()

    def remember_metadata(
        self, binary: Path, signature: Signature, metadata: PluginMetadata
    ) -> None:
        entry = {"signature": list(signature), "metadata": metadata.to_json()}
        if self.metadata.get(str(binary)) != entry:
            self.metadata[str(binary)] = entry
            self.save()

    def forget_binaries(self, keep: set[Path]) -> None:
        """Drop the metadata of binaries that are gone from the plugin directory."""
        names = {str(p) for p in keep}
        stale = [k for k in self.metadata if k not in names]
        if stale:
            for k in stale:
                del self.metadata[k]
            self.save()

    # ------------------------------------------------------------------ failures

    def set_failures(self, plugin_id: str, count: int) -> None:
        if self.failures.get(plugin_id, 0) == count:
            return
        if count > 0:
            self.failures[plugin_id] = count
        else:
            self.failures.pop(plugin_id, None)
        self.save()

    # ------------------------------------------------------------------ writing

    def save(self) -> None:
        """Atomically replace the file; raises ``OSError`` (the caller logs it)."""
        body = json.dumps(
            {"version": FORMAT_VERSION, "metadata": self.metadata, "failures": self.failures},
            sort_keys=True,
        )
        replace_file(self.path, body)
