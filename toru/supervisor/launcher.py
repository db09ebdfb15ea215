"""Bringing one plugin up: spawn, KV channel, wait for its socket, connect, ``init``.

This is the OS seam of the state machine: ``SupervisedPlugin`` only sees a ``Launcher``
returning a ``Launched`` (process + connection), so its tests can pass a fake. The launcher
takes plain data (``LaunchSpec``) and a small ``LaunchCallbacks`` Protocol, never the plugin
object itself, so this module does not depend on ``supervised``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from toru.config import ConfigError, plugin_config_env
from toru.store import Store
from toru_plugin_api.messages import host_init

from .cgroups import PluginCgroups
from .connection import PluginConnection
from .identity import Identity, PluginIdentities
from .kv_channel import KvChannel
from .process import PluginProcess, describe_exit

SOCKET_WAIT = 5.0
MAX_UNIX_PATH = 107
SOCKET_NAME = "plugin.sock"  # in run/p/<id>/, the plugin's own directory


def plugin_socket(socket_dir: Path, plugin_id: str, instance: int = 0) -> Path:
    """Where plugin ``plugin_id`` listens (``TORU_PLUGIN_SOCKET``): ``run/p/<id>/``, and
    after ``instance`` upgrades ``run/p/<id>.<instance>/`` (ids have no dot), so the new
    process of an upgrade gets a fresh directory of its own beside the old one's."""
    name = plugin_id if instance == 0 else f"{plugin_id}.{instance}"
    return socket_dir / name / SOCKET_NAME


def sweep_instance_dirs(socket_dir: Path) -> None:
    """Remove the socket directories of upgrades' instances (``<id>.<n>``) a killed
    supervisor left behind: at start no plugin of this home runs, and each instance's
    directory is made fresh at its own start anyway (``own_socket_dir``)."""
    try:
        entries = list(socket_dir.iterdir())
    except OSError:
        return
    for entry in entries:
        if "." in entry.name and not entry.is_symlink() and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def own_socket_dir(directory: Path, identity: Identity | None) -> None:
    """Make ``directory`` (run/p/<id>) the plugin's own: a fresh 0700 directory owned by
    ``identity``, so no other plugin (and no other local user) can connect to its socket.

    Whatever is there (a stale socket, a symlink a plugin left) is removed first; the
    supervisor connects as root or as the plugin's own user.
    """
    try:
        st = directory.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        directory.unlink()
    elif st is not None:
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory.mkdir(mode=0o700)
    if identity is not None and not identity.is_self:
        os.chown(directory, identity.uid, identity.gid)


class LaunchError(Exception):
    """The plugin could not be brought up; ``details`` go into the crash event."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class LaunchAborted(Exception):
    """The plugin was disabled while it was starting."""


@dataclass
class Launched:
    process: Any  # PluginProcess or a test fake: exited, pid, signal_group, wait, terminate
    connection: Any  # PluginConnection or a test fake
    kv_transport: asyncio.BaseTransport | None = None
    socket: Path | None = None  # where this instance listens (``plugin_socket``)

    def close_kv(self) -> None:
        if self.kv_transport is not None:
            self.kv_transport.close()
            self.kv_transport = None


@dataclass(frozen=True)
class LaunchSpec:
    """What to start: the plugin's id, its executable and where its log goes (for ``init``);
    ``binary_bodies`` when its metadata declared that capability (its connection then sends
    bodies as raw bytes)."""

    id: str
    binary: Path
    log_path: Path
    binary_bodies: bool = False
    # Which start of the plugin this is: an upgrade runs instance n+1 beside instance n, each
    # with its own socket and cgroup (``plugin_socket``, ``PluginCgroups.for_plugin``).
    instance: int = 0


class LaunchCallbacks(Protocol):
    """What the launched process and its connections report back (``SupervisedPlugin``)."""

    def on_output(self, stream: str, lines: list[bytes]) -> None: ...
    def on_kv_op(self, action: str) -> None: ...
    def on_kv_error(self, reason: str) -> None: ...
    def on_connection_lost(self, reason: str) -> None: ...
    def on_request_timeout(self, request_id: str) -> None: ...
    def launch_aborted(self) -> bool:
        """True once the plugin is being disabled: stop waiting for its socket."""
        ...


class Launcher(Protocol):
    async def launch(self, spec: LaunchSpec, callbacks: LaunchCallbacks) -> Launched: ...


def plugin_env(extra: dict[str, str]) -> dict[str, str]:
    """The plugin's environment: ours minus Toru's own settings and secrets, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TORU_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(extra)
    return env


class ProcessLauncher:
    """The real launcher: a process per plugin and a Unix-socket connection to it."""

    def __init__(
        self,
        store: Store,
        instance_id: str,
        socket_dir: Path,
        cwd: Path,
        max_frame: int,
        socket_wait: float = SOCKET_WAIT,
        cgroups: PluginCgroups | None = None,
        identities: PluginIdentities | None = None,
    ) -> None:
        self.store = store
        self.instance_id = instance_id
        self.socket_dir = socket_dir
        self.cwd = cwd
        self.max_frame = max_frame
        self.socket_wait = socket_wait
        self.cgroups = cgroups  # faults: one cgroup per plugin where the machine allows it
        self.identities = identities  # None: plugins run as Toru's own user (tests' default)

    async def launch(self, spec: LaunchSpec, callbacks: LaunchCallbacks) -> Launched:
        loop = asyncio.get_running_loop()
        sock_path = plugin_socket(self.socket_dir, spec.id, spec.instance)
        if len(str(sock_path).encode()) > MAX_UNIX_PATH:
            raise LaunchError(f"socket path {sock_path} is longer than {MAX_UNIX_PATH} bytes")
        try:  # [plugins.<id>.config] of toru.toml in the home (our cwd), as JSON
            config_env = plugin_config_env(self.cwd, spec.id)
            identity = self.identities.for_plugin(spec.id) if self.identities else None
            own_socket_dir(sock_path.parent, identity)
        except (ConfigError, ValueError) as exc:  # IdentityError is a ValueError
            raise LaunchError(str(exc)) from None
        except OSError as exc:
            raise LaunchError(f"cannot prepare {sock_path.parent}: {exc}") from None
        host_end, plugin_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = plugin_env(
            {
                **config_env,
                "TORU_PLUGIN_SOCKET": str(sock_path),
                "TORU_PLUGIN_ID": spec.id,
                "TORU_INSTANCE_ID": self.instance_id,
                "TORU_KV_FD": str(plugin_end.fileno()),
            }
        )
        try:
            proc = await PluginProcess.spawn(
                [str(spec.binary)],
                env=env,
                cwd=str(self.cwd),
                on_output=callbacks.on_output,
                pass_fds=[plugin_end.fileno()],
                cgroup=self.cgroups.for_plugin(spec.id, spec.instance) if self.cgroups else None,
                identity=identity,
            )
        except OSError as exc:
            host_end.close()
            raise LaunchError(f"cannot execute {spec.binary.name}: {exc.strerror or exc}")
        finally:
            plugin_end.close()
        launched = Launched(proc, None, socket=sock_path)
        try:
            kv_transport, _ = await loop.create_unix_connection(
                lambda: KvChannel(
                    spec.id,
                    self.store,
                    self.max_frame,
                    on_op=callbacks.on_kv_op,
                    on_error=callbacks.on_kv_error,
                ),
                sock=host_end,
            )
            launched.kv_transport = kv_transport
            launched.connection = await self._connect(spec, callbacks, proc, sock_path)
            launched.connection.send(
                host_init(self.instance_id, str(sock_path), str(spec.log_path))
            )
        except BaseException:
            launched.close_kv()
            await proc.terminate(0.0)
            raise
        return launched

    async def reconnect(
        self, spec: LaunchSpec, callbacks: LaunchCallbacks, launched: Launched
    ) -> PluginConnection:
        """A new connection to a running plugin that closed the old one (no second init)."""
        sock_path = launched.socket or plugin_socket(self.socket_dir, spec.id, spec.instance)
        return await self._connect(spec, callbacks, launched.process, sock_path)

    async def _connect(
        self, spec: LaunchSpec, callbacks: LaunchCallbacks, proc: PluginProcess, sock_path: Path
    ) -> PluginConnection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.socket_wait
        delay = 0.005
        while True:
            if callbacks.launch_aborted():
                raise LaunchAborted()
            if proc.exited.done():
                code = proc.exited.result()
                raise LaunchError(
                    "plugin exited while starting" + (" (memory limit)" if proc.oom_killed else ""),
                    {**describe_exit(code), "phase": "starting"},
                )
            if sock_path.is_symlink():  # it would point our connections somewhere else
                raise LaunchError(
                    f"{sock_path} is a symbolic link, not the plugin's socket",
                    {"phase": "starting", "socket": str(sock_path)},
                )
            if sock_path.exists():
                try:
                    _, conn = await loop.create_unix_connection(
                        lambda: PluginConnection(
                            spec.id,
                            self.max_frame,
                            on_lost=callbacks.on_connection_lost,
                            on_timeout=callbacks.on_request_timeout,
                            binary=spec.binary_bodies,
                        ),
                        str(sock_path),
                    )
                    return conn
                except (ConnectionRefusedError, FileNotFoundError):
                    pass
            if loop.time() >= deadline:
                raise LaunchError(
                    f"plugin did not create its socket within {self.socket_wait:g} s"
                    " (if it is only slow to start, raise TORU_START_TIMEOUT /"
                    " supervisor.start_timeout)",
                    {"phase": "starting", "socket": str(sock_path)},
                )
            await asyncio.wait({proc.exited}, timeout=delay)
            delay = min(delay * 2, 0.1)
