"""The supervisor's binary-pinning decisions (pins.py holds the data): may this file run,
and recording what an admin approved.

The supervisor asks at three points: right before every spawn (``verify``), when a rescan
sees a pinned plugin's file change (``change_of``, in front of the "binary replaced" path)
and when it first sees a binary whose pinned file name no longer matches
(``unapproved_at_start``). Enable, approve and install record pins through it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from toru.errors import Conflict, Unavailable

from .pins import BinaryChange, BinaryHasher, PinStore


class Pinnable(Protocol):
    """What the gate needs of a plugin (``SupervisedPlugin``)."""

    id: str
    binary: Path
    binary_change: BinaryChange | None

    def mark_changed(self, change: BinaryChange) -> None: ...


class PinGate:
    def __init__(self, path: Path, enabled: bool, log: Any) -> None:
        self.enabled = enabled  # plugins.pin_binaries
        self.store = PinStore(path)
        self.hasher = BinaryHasher()
        self.log = log  # SupervisorLog
        if self.store.load_error:
            log.error(
                "binary pins unreadable: every pinned plugin waits for approval",
                error=self.store.load_error,
            )
        if not enabled:
            log.warn("binary pinning is off (plugins.pin_binaries = false): development only")

    async def verify(self, plugin_id: str, binary: Path) -> BinaryChange | None:
        """``Deps.verify_binary``: right before a spawn, is this the approved file?"""
        if not self.enabled:
            return None
        try:
            digest = await self.hasher.hash(binary)
        except OSError:
            return None  # gone: the launch fails and the next rescan removes it
        if self.store.to_pin(plugin_id):
            try:
                self.pin(plugin_id, digest, binary.name, "first-start")
            except Unavailable:
                pass  # logged; it was enabled in the older home, so it still runs
            return None
        return self.store.check(plugin_id, digest, binary.name)

    def pin(self, plugin_id: str, digest: str, binary_name: str, how: str) -> None:
        """Record the approved hash; raises ``Unavailable`` when it cannot be written."""
        old = self.store.get(plugin_id)
        try:
            self.store.set(plugin_id, digest, binary_name, how)
        except OSError as exc:
            self.log.error("could not save the binary pin", plugin_id, error=str(exc))
            raise Unavailable(f"could not save the binary pin: {exc}") from None
        self.log.info(
            f"pinned {binary_name} ({how})",
            plugin_id,
            sha256=digest,
            previous=old.sha256 if old else None,
        )

    def pin_installed(self, plugin_id: str, digest: str, binary_name: str) -> None:
        """``install.InstallPins``: the pin of an install."""
        self.pin(plugin_id, digest, binary_name, "install")

    def snapshot(self) -> dict[str, Any]:
        return self.store.snapshot()

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.store.restore(snapshot)

    async def change_of(self, plugin_id: str, binary: Path) -> BinaryChange | None:
        """How a pinned plugin's file differs from its pin; None when it matches, has no
        pin, cannot be read or pinning is off."""
        if not self.enabled or self.store.get(plugin_id) is None:
            return None
        try:
            digest = await self.hasher.hash(binary)
        except OSError:
            return None
        return self.store.check(plugin_id, digest, binary.name)

    async def unapproved_at_start(self, binary: Path) -> tuple[str, BinaryChange] | None:
        """A binary whose file name is pinned but whose bytes are not: its pinned id and the
        change (a file replaced while Toru was down)."""
        owner = self.store.by_binary(binary.name) if self.enabled else None
        if owner is None:
            return None
        change = await self.change_of(owner[0], binary)
        return None if change is None else (owner[0], change)

    async def pin_for_enable(self, p: Pinnable) -> None:
        """An admin's enable pins the binary; one that changed since its pin needs approve."""
        if not self.enabled:
            return
        digest = await self._hash(p)
        pin = self.store.get(p.id)
        if pin is None or not pin.sha256:
            self.pin(p.id, digest, p.binary.name, "enable")
            return
        change = self.store.check(p.id, digest, p.binary.name)
        if change is not None:
            p.mark_changed(change)
            raise Conflict(
                f"plugin {p.id}'s binary changed since it was approved (pinned"
                f" {change.pinned}, found {change.found}): review it, then approve it",
                code="binary_changed",
            )

    async def approve(self, p: Pinnable) -> BinaryChange:
        """Pin the change an admin reviewed (the one shown); 409 if there is none or the file
        changed again since. Returns the change approved."""
        change = p.binary_change
        if change is None:
            raise Conflict(f"plugin {p.id} has no changed binary to approve", code="no_change")
        digest = await self._hash(p)
        if digest != change.found:
            again = self.store.check(p.id, digest, p.binary.name)
            if again is not None:
                p.mark_changed(again)
            raise Conflict(
                f"{p.binary.name} changed again (now {digest}): review it and approve again",
                code="binary_changed",
            )
        self.pin(p.id, digest, p.binary.name, "approve")
        return change

    async def _hash(self, p: Pinnable) -> str:
        try:
            return await self.hasher.hash(p.binary)
        except OSError as exc:
            raise Conflict(f"cannot read {p.binary.name}: {exc.strerror}") from None
