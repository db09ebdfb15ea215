"""Attack plugins for a home, and the environment that runs the shipped identity default."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from toru.home_modes import unreachable

ATTACK = Path(__file__).resolve().parent / "attack_plugin.py"
ROOT = Path(__file__).resolve().parents[2]

# tests/conftest.py names the suite's own uid as plugins.user; "" is "unset" to Toru, so
# these tests get the shipped default (toru-plugin when root).
SHIPPED_DEFAULT = {"TORU_PLUGINS_USER": ""}

needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="running plugins as another uid needs root (CAP_SETUID); the mode tests still run",
)

ATTACKS = (
    "control_socket",
    "database",
    "database_wal",
    "database_shm",
    "supervisor_log",
    "own_log",
    "plugin_state",
    "initial_password",
    "list_run",
    "write_plugins",
    "write_home",
    "other_log",
)


def plugin_python() -> str:
    """A python3 that an unprivileged user can execute (the suite's own may live under
    /root, as pyenv's does here); the attack plugin needs only the standard library."""
    for candidate in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if not os.access(candidate, os.X_OK):
            continue
        done = subprocess.run(
            [candidate, "-c", "pass"], user=65534, group=65534, capture_output=True, timeout=60
        )
        if done.returncode == 0:
            return candidate
    pytest.fail("no python3 that an unprivileged user can run (install python3)")


def install_attackers(home: Path, ids: tuple[str, str]) -> None:
    """Write two attack plugins into ``home``/plugins, each told to attack the other."""
    plugins = home / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    python = plugin_python()
    toml = []
    for me, other in (ids, ids[::-1]):
        path = plugins / f"{me}.binary"
        path.write_text(f"#!{python}\n" + ATTACK.read_text())
        path.chmod(0o755)
        toml += [f'[plugins.{me}.config]\nhome = "{home}"\nother = "{other}"\n']
    (home / "toru.toml").write_text("\n".join(toml))


def proc_ids(pid: int) -> tuple[int, int]:
    """The real uid and gid of a running process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["Uid"][0]), int(fields["Gid"][0])


# Toru as the shipped units run it: a plain uid (User=toru) with AmbientCapabilities.
UNIT_CAPS = "+setuid,+setgid,+kill,+chown,+dac_override"
TORU_UID = 70500  # no account needed


def as_unit_user(
    home: Path, *toru_args: str, caps: str = UNIT_CAPS, keep: tuple[Path, ...] = ()
) -> tuple[list[str], dict[str, str]]:
    """``toru ARGS`` as uid ``TORU_UID`` with the units' ambient capabilities (setpriv), and
    the environment it needs; ``home`` is handed to that uid first (but the ``keep`` paths).

    Toru gives up capabilities where it can (gunicorn at start, plugins before exec), so it
    runs on a python3 a plain user can read (this suite's may live under /root), with this
    virtualenv's packages and checkout on ``PYTHONPATH``: the same minor version, the same ABI.
    """
    if shutil.which("setpriv") is None:
        pytest.fail("setpriv (util-linux) is needed to start Toru with ambient capabilities")
    python = plugin_python()
    version = subprocess.run(
        [python, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True
    ).stdout.strip()
    if version != str(sys.version_info[:2]):
        pytest.skip(f"{python} is Python {version}, not this virtualenv's {sys.version_info[:2]}")
    packages = [p for p in sys.path if p.endswith("site-packages") and p.startswith(sys.prefix)]
    for needed in [ROOT, *packages]:
        if (blocked := unreachable(Path(needed), TORU_UID, TORU_UID)) is not None:
            pytest.skip(f"a plain user cannot traverse {blocked} to this checkout (as /opt/toru)")
    for path in [home, *home.rglob("*")]:
        if path not in keep:
            os.chown(path, TORU_UID, TORU_UID)
    argv = ["setpriv", f"--reuid={TORU_UID}", f"--regid={TORU_UID}", "--clear-groups"]
    argv += [f"--inh-caps={caps}", f"--ambient-caps={caps}"] if caps else []
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), *packages])}
    return [*argv, "--", python, "-m", "toru.cli", *toru_args], env


def capabilities(pid: int) -> dict[str, str]:
    """``CapInh/CapPrm/CapEff/CapAmb`` of a process (the bounding set is left out)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap") and key != "CapBnd":
            out[key] = value.strip()
    return out


def unit_supervisor(
    home: Path, caps: str = UNIT_CAPS, keep: tuple[Path, ...] = (), **env: str
) -> subprocess.Popen:
    """``toru supervisor`` as ``as_unit_user`` runs it, with the supervisor tests' fast
    settings and ``env`` (stderr into ``home``/supervisor.stderr); the caller stops it."""
    from tests.supervisor.helpers import FAST_ENV

    argv, extra = as_unit_user(home, "supervisor", "--home", str(home), caps=caps, keep=keep)
    full = {**os.environ, **FAST_ENV, **extra, **env}
    full.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with open(home / "supervisor.stderr", "ab") as err:
        return subprocess.Popen(argv, env=full, cwd=ROOT, stderr=err, start_new_session=True)


def doctor_lines(home: Path, **env: str) -> list[str]:
    """``toru doctor --home HOME`` with ``env``: its output lines."""
    done = subprocess.run(
        [sys.executable, "-m", "toru.cli", "doctor", "--home", str(home)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TORU_BIND": "", **env},
    )
    return done.stdout.splitlines()
