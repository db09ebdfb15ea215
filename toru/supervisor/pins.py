"""Binary pinning: the SHA-256 an admin approved for each plugin, and the check against it.

Why: whoever can write ``plugins/`` (a deploy user, a compromised plugin running with write
access there) could otherwise swap a plugin's executable and have Toru run it at the next
restart. An admin's enable, approve or ``toru plugins install`` records the file's hash; a
binary whose hash differs from its pin is not run (state ``changed``) until an admin
approves it.

The pins live in ``var/binary-pins.json`` (written atomically, in Toru's private ``var/``),
not in ``plugins/.metadata/config.json``: whoever can write ``plugins/`` can rewrite that
file too, so a pin kept there would not stop the attacker it is for. The supervisor writes
the file while it runs; the offline CLI (no supervisor) writes it directly.

A home from an older version has no pin file: every enabled plugin is pinned to its current
binary on that first start (logged), and from then on an enabled plugin without a pin is
``changed`` too (someone enabled it by editing config.json, bypassing the admin).

Hashing reads the whole file, so it runs in a thread (``BinaryHasher.hash``) and only when the
file's identity ``(device, inode, size, mtime_ns, ctime_ns)`` changed since the last hash: a
rename gives a new inode and any write or ``utime`` a new ctime, so a kept mtime and size do
not hide a change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toru.atomic_write import replace_file

from .supervisor_state import read_json_object

FORMAT_VERSION = 1
CHUNK = 1 << 20
FileKey = tuple[int, int, int, int, int]


@dataclass(frozen=True)
class Pin:
    """The approved hash of one plugin's binary (by file name, so it is checked before any
    ``--metadata`` of a replaced file runs)."""

    sha256: str  # "": enabled offline before its binary was there; pinned when first seen
    binary: str  # file name in plugins/
    how: str = "enable"  # enable | approve | install | first-start
    at: str = ""

    def to_json(self) -> dict[str, str]:
        return {"sha256": self.sha256, "binary": self.binary, "how": self.how, "at": self.at}


@dataclass(frozen=True)
class BinaryChange:
    """A binary that does not match its pin: what was approved and what is there now."""

    pinned: str | None  # None: enabled without ever being pinned
    found: str
    binary: str

    def to_json(self) -> dict[str, Any]:
        return {"pinned_sha256": self.pinned, "found_sha256": self.found, "binary": self.binary}


def sha256_file(path: Path) -> str:
    """The file's SHA-256 in hex, read in 1 MiB chunks (blocking: call it in a thread)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def file_key(path: Path) -> FileKey:
    st = os.stat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


class BinaryHasher:
    """SHA-256 of binaries, cached by file identity; the hashing runs in a worker thread."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[FileKey, str]] = {}

    async def hash(self, path: Path) -> str:
        """Raises ``OSError`` when the file cannot be read (gone, permissions)."""
        key = file_key(path)
        hit = self._cache.get(str(path))
        if hit is not None and hit[0] == key:
            return hit[1]
        digest = await asyncio.to_thread(sha256_file, path)
        if file_key(path) == key:  # changed while we read it: do not cache a mix
            self._cache[str(path)] = (key, digest)
        return digest

    def remember(self, path: Path, digest: str) -> None:
        """A hash computed elsewhere (an install hashes while it copies)."""
        try:
            self._cache[str(path)] = (file_key(path), digest)
        except OSError:
            pass


class PinStore:
    """``var/binary-pins.json``: plugin id -> ``Pin``. Every change is written through."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pins: dict[str, Pin] = {}
        self.load_error: str | None = None
        # An older home (no pin file yet): enabled plugins get pinned on this first start.
        self.adopting = not path.exists()
        self._load()

    def _load(self) -> None:
        # NOTE: an unreadable pin file pins nothing, so nothing pinned runs until an admin
        # approves it again: failing closed is the point of a pin.
        data, self.load_error = read_json_object(self.path)
        pins = data.get("pins")
        for pid, e in (pins if isinstance(pins, dict) else {}).items():
            if isinstance(e, dict) and isinstance(e.get("sha256"), str) and isinstance(pid, str):
                self.pins[pid] = Pin(
                    e["sha256"],
                    str(e.get("binary", "")),
                    str(e.get("how", "")),
                    str(e.get("at", "")),
                )

    def get(self, plugin_id: str) -> Pin | None:
        return self.pins.get(plugin_id)

    def by_binary(self, name: str) -> tuple[str, Pin] | None:
        """The plugin id and pin recorded for the binary file ``name``."""
        for pid, pin in self.pins.items():
            if pin.binary == name:
                return pid, pin
        return None

    def set(self, plugin_id: str, sha256: str, binary: str, how: str) -> Pin:
        """Record (and write) a pin; raises ``OSError`` when the file cannot be written."""
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        pin = Pin(sha256, binary, how, at)
        same_file = [p for p, old in self.pins.items() if binary and old.binary == binary]
        for pid in [p for p in same_file if p != plugin_id]:
            del self.pins[pid]  # one pin per file: the file now holds this plugin
        self.pins[plugin_id] = pin
        self._write()
        return pin

    def _write(self) -> None:
        body = {"version": FORMAT_VERSION, "pins": {k: v.to_json() for k, v in self.pins.items()}}
        replace_file(self.path, json.dumps(body, indent=2, sort_keys=True) + "\n")

    def pin_installed(self, plugin_id: str, sha256: str, binary: str) -> None:
        """``install.InstallPins``: the pin of an install."""
        self.set(plugin_id, sha256, binary, "install")

    def snapshot(self) -> dict[str, Pin]:
        return dict(self.pins)

    def restore(self, snapshot: dict[str, Pin]) -> None:
        """Back to ``snapshot`` (an install whose rename failed: the old binary keeps its pin)."""
        self.pins = dict(snapshot)
        self._write()

    def check(self, plugin_id: str, digest: str, binary: str) -> BinaryChange | None:
        """None when ``digest`` is what was approved for ``plugin_id``, else the change."""
        pin = self.pins.get(plugin_id)
        if pin is not None and pin.sha256 in (digest, ""):
            return None
        return BinaryChange(pin.sha256 if pin else None, digest, binary)

    def to_pin(self, plugin_id: str) -> bool:
        """Whether the next sight of this plugin's binary records its pin: no pin in an older
        home's first run, or an admin enabled it offline before its binary was there."""
        pin = self.pins.get(plugin_id)
        return (pin is None and self.adopting) or (pin is not None and not pin.sha256)
