"""``toru doctor``: check a home and the host it runs on, and say what to fix.

Each check looks at one thing and returns findings; a finding is one printed line with the
problem and its fix. ``problem`` findings make the exit code 1; ``warning`` findings are
degraded-but-working set-ups (for instance no writable cgroup v2, where Toru falls back to
process groups) and leave it at 0. Doctor only reads: it never creates or repairs files.
"""

from __future__ import annotations

import ast
import contextlib
import http.client
import importlib
import json
import os
import pwd
import re
import socket
import stat
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toru_plugin_api.messages import ID_RE

from .config import Config, ConfigError, load_config
from .supervisor.identity import lookup_user

MiB = 1024 * 1024
DEFAULT_MIN_FREE = 256 * MiB
PROBE_TIMEOUT = 3.0
GUNICORN_CONF = Path(__file__).parent / "wsgi" / "gunicorn_conf.py"


@dataclass(frozen=True)
class Finding:
    level: str  # "problem" or "warning"
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.level}: {self.what}; fix: {self.fix}"


def problem(what: str, fix: str) -> Finding:
    return Finding("problem", what, fix)


def warning(what: str, fix: str) -> Finding:
    return Finding("warning", what, fix)


@dataclass(frozen=True)
class Context:
    config: Config
    min_free: int = DEFAULT_MIN_FREE
    nginx_site: Path | None = None


Check = Callable[[Context], Iterator[Finding]]


# ---------------------------------------------------------------------------------- home


def _exposure(mode: int) -> Callable[[str, str], Finding] | None:
    """World access is a problem; group access only a warning (a deliberate shared group)."""
    if mode & 0o007:
        return problem
    return warning if mode & 0o070 else None


def _private(path: Path, want: int, allow: int = 0) -> Iterator[Finding]:
    """``path``, if it exists, has no permission bits for group or others (but ``allow``)."""
    with contextlib.suppress(FileNotFoundError):
        mode = stat.S_IMODE(path.lstat().st_mode)
        if finding := _exposure(mode & ~allow):
            yield finding(
                f"{path} is accessible by {'others' if mode & 0o007 else 'its group'} "
                f"(mode {mode:04o})",
                f"chmod {want:04o} {path}",
            )


def _db_files(c: Config) -> list[Path]:
    return [c.db_path.with_name(c.db_path.name + suffix) for suffix in ("", "-wal", "-shm")]


def check_modes(ctx: Context) -> Iterator[Finding]:
    """var/, the database and the logs hold sessions, tokens and plugin data: owner only
    (the shipped units run Toru with UMask=0077)."""
    c = ctx.config
    yield from _private(c.var_dir, 0o700)
    # --x for others: plugins of another uid reach their run/p/<id>/ (toru/home_modes.py)
    yield from _private(c.run_dir, 0o700, allow=0o011)
    for path in _db_files(c):
        yield from _private(path, 0o600)
    yield from _private(c.var_dir / "initial-admin-password", 0o600)
    exposed = [p for p in _walk(c.log_dir) if stat.S_IMODE(p.lstat().st_mode) & 0o077]
    if exposed:
        modes = [stat.S_IMODE(p.lstat().st_mode) for p in exposed]
        finding = problem if any(m & 0o007 for m in modes) else warning
        yield finding(
            f"{len(exposed)} log files/directories under {c.log_dir} are accessible by "
            f"group/others (e.g. {exposed[0]}, mode {modes[0]:04o})",
            f"chmod -R go-rwx {c.log_dir}",
        )


def check_owners(ctx: Context) -> Iterator[Finding]:
    """Everything Toru writes belongs to the owner of var/ (say, a `toru user add` run as
    root left a root-owned toru.db-wal that the toru user cannot write)."""
    c = ctx.config
    owner = _owner(c.var_dir)
    if owner is None:
        return
    foreign = [
        p for p in [*_db_files(c), *_walk(c.log_dir)] if p.exists() and p.lstat().st_uid != owner
    ]
    if foreign:
        user = _user_name(owner)
        yield problem(
            f"{len(foreign)} files are not owned by {user}, who owns {c.var_dir} "
            f"(e.g. {foreign[0]}): Toru cannot write them",
            f"chown -R {user}: {c.var_dir}",
        )


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


def _user_name(uid: int | None) -> str:
    try:
        return pwd.getpwuid(uid).pw_name if uid is not None else "?"
    except KeyError:
        return str(uid)


def _walk(top: Path) -> Iterator[Path]:
    if not top.is_dir():
        return
    yield top
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            yield Path(root) / name


def check_disk(ctx: Context) -> Iterator[Finding]:
    """A full disk stops the database and drops log lines."""
    c = ctx.config
    where = c.var_dir if c.var_dir.exists() else c.home
    try:
        st = os.statvfs(where)
    except OSError as exc:
        yield problem(f"cannot read free space of {where}: {exc}", f"check that {where} exists")
        return
    free = st.f_bavail * st.f_frsize
    if free < ctx.min_free:
        yield problem(
            f"only {free / MiB:.0f} MiB free on the file system of {where} "
            f"(doctor wants {ctx.min_free / MiB:.0f} MiB)",
            f"free disk space there (old rotated logs: {c.log_dir}/**/*.log.N) or move the home",
        )
    if st.f_files and st.f_favail < 1000:
        yield problem(
            f"only {st.f_favail} inodes free on the file system of {where}",
            "delete files there or move the home",
        )


def check_database(ctx: Context) -> Iterator[Finding]:
    """``PRAGMA quick_check`` on a read-only connection (a missing file is a fresh home)."""
    import apsw

    path = ctx.config.db_path
    if not path.exists():
        return
    restore = "restore var/toru.db from a backup (docs/operations.md, Backup and restore)"
    try:
        conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    except apsw.Error as exc:
        yield problem(f"cannot open {path}: {exc}", f"check its owner and mode; else {restore}")
        return
    try:
        conn.set_busy_timeout(5000)
        rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
    except apsw.NotADBError:
        yield problem(f"{path} is not a SQLite database", restore)
        return
    except apsw.Error as exc:
        yield problem(f"{path} failed its integrity check: {exc}", restore)
        return
    finally:
        conn.close()
    if rows != ["ok"]:
        yield problem(f"{path} is damaged: {'; '.join(map(str, rows[:3]))}", restore)


def check_plugin_state(ctx: Context) -> Iterator[Finding]:
    """plugins/.metadata/config.json parses and has the shape the supervisor writes."""
    path = ctx.config.state_file
    for kept in sorted(path.parent.glob(f"{path.name}.corrupt-*")):
        yield warning(
            f"a damaged {path.name} was set aside as {kept}",
            f"check `toru plugins` lists the right plugins enabled, then delete {kept}",
        )
    if not path.exists():
        return
    fix = f"repair or delete {path} (then enable the plugins again: toru plugins enable ID)"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        yield problem(f"{path} does not parse: {exc}", fix)
        return
    for what in _state_shape_errors(data):
        yield problem(f"{path}: {what}", fix)


def _state_shape_errors(data: Any) -> Iterator[str]:
    """``{"version": 1, "plugins": {id: {"enabled": bool, ...}}}`` or the original flat
    ``{id: {"enabled": bool}}`` / ``{id: bool}``."""
    if not isinstance(data, dict):
        yield f"expected a JSON object, found {type(data).__name__}"
        return
    plugins = data
    if "version" in data:
        if data["version"] != 1:
            yield f"unknown version {data['version']!r} (this Toru writes 1)"
        plugins = data.get("plugins")
        if not isinstance(plugins, dict):
            yield f'"plugins" must be an object, found {type(plugins).__name__}'
            return
    for pid, entry in plugins.items():
        if not ID_RE.match(pid):
            yield f"{pid!r} is not a plugin id"
        elif isinstance(entry, dict):
            if not isinstance(entry.get("enabled"), bool):
                yield f'{pid}: "enabled" must be true or false'
        elif not isinstance(entry, bool):
            yield f"{pid}: expected an object or true/false, found {type(entry).__name__}"


# ---------------------------------------------------------------------------------- runtime


def check_cgroups(ctx: Context) -> Iterator[Finding]:
    """Each plugin in its own cgroup needs cgroup v2 where this process may create cgroups."""
    from .supervisor.cgroups import probe  # the same answer the supervisor acts on

    support = probe()
    if not support.available:
        yield warning(
            f"plugins cannot get cgroups of their own ({support.reason}); Toru falls back to "
            "process groups, so a plugin's setsid'ed children may outlive it",
            "run Toru under the shipped systemd unit (Delegate=yes) on a cgroup v2 host",
        )


def check_plugin_user(ctx: Context) -> Iterator[Finding]:
    """The configured ``plugins.user`` exists (and is not the user Toru itself runs as);
    unset, a Toru that runs as a plain user (the owner of var/) runs plugins as itself."""
    name = ctx.config.plugins_user
    if not name:
        owner = _owner(ctx.config.var_dir)
        if owner not in (None, 0):
            yield warning(
                f"plugins.user is unset, so plugins run as {_user_name(owner)}, the owner of "
                f"{ctx.config.var_dir}: nothing keeps them from the database and the logs",
                'set plugins.user = "toru-plugin" (the shipped units do) and give Toru the '
                "units' capabilities",
            )
        return
    entry = lookup_user(name)
    if entry is None and not name.isdigit():  # a bare uid needs no account
        yield problem(
            f"plugins.user {name!r} does not exist",
            f"useradd --system --no-create-home --shell /usr/sbin/nologin {name}",
        )
        return
    uid = entry.pw_uid if entry is not None else int(name)
    owner = _owner(ctx.config.var_dir)
    if owner is not None and uid == owner:
        yield problem(
            f"plugins.user {name!r} owns {ctx.config.var_dir}: plugins could read the database",
            "create a separate user for plugins and set plugins.user to it",
        )


def check_uvloop(ctx: Context) -> Iterator[Finding]:
    try:
        importlib.import_module("uvloop")
    except ImportError as exc:
        yield problem(
            f"uvloop is not importable ({exc})", f"{sys.executable} -m pip install uvloop"
        )


def check_worker_class(ctx: Context) -> Iterator[Finding]:
    """gunicorn can load the worker class Toru configures (read, not imported: importing the
    config would create directories in the home)."""
    settings = literal_settings(GUNICORN_CONF)
    worker = str(settings.get("worker_class", "sync"))
    try:
        from gunicorn.util import load_class

        load_class(worker, default="gunicorn.workers.sync.SyncWorker", section="gunicorn.workers")
    except Exception as exc:  # gunicorn raises RuntimeError, ImportError, AttributeError...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        yield problem(
            f"gunicorn cannot load worker class {worker!r} set in {GUNICORN_CONF} ({reason})",
            f"{sys.executable} -m pip install -U gunicorn",
        )
    loop = settings.get("asgi_loop")
    if loop and loop != "auto":
        try:
            importlib.import_module(str(loop))
        except ImportError:
            yield problem(
                f"asgi_loop = {loop!r} in {GUNICORN_CONF} but {loop} is not importable",
                f"{sys.executable} -m pip install {loop}",
            )


def literal_settings(path: Path) -> dict[str, Any]:
    """Top-level ``name = <literal>`` assignments of a Python file."""
    out: dict[str, Any] = {}
    with contextlib.suppress(OSError, SyntaxError):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target = node.targets[0]
                if isinstance(target, ast.Name):
                    with contextlib.suppress(ValueError):
                        out[target.id] = ast.literal_eval(node.value)
    return out


# ---------------------------------------------------------------------------------- network


@dataclass(frozen=True)
class Address:
    """A bind or upstream address: ``unix:/path`` or ``host:port``."""

    text: str
    family: int
    sockaddr: Any

    @classmethod
    def parse(cls, text: str) -> Address:
        """Raises ValueError for what is neither (including a name that does not resolve)."""
        if text.startswith("unix:"):
            return cls(text, socket.AF_UNIX, text[5:])
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{text!r} is neither HOST:PORT nor unix:/path")
        host = host.strip("[]") or "0.0.0.0"
        try:
            family, _, _, _, sockaddr = socket.getaddrinfo(
                host, int(port), type=socket.SOCK_STREAM
            )[0]
        except socket.gaierror as exc:
            raise ValueError(f"cannot resolve {host!r}: {exc}") from None
        return cls(text, family, sockaddr)

    def client_sockaddr(self) -> Any:
        """Where a client connects: a wildcard bind is reached on loopback."""
        if self.family == socket.AF_INET and self.sockaddr[0] == "0.0.0.0":
            return ("127.0.0.1", self.sockaddr[1])
        if self.family == socket.AF_INET6 and self.sockaddr[0] == "::":
            return ("::1", *self.sockaddr[1:])
        return self.sockaddr

    def served_by_toru(self) -> bool | None:
        """True if a Toru answers ``/healthz`` here, False if something else does, None if
        nothing accepts connections."""
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            sock.settimeout(PROBE_TIMEOUT)
            sock.connect(self.client_sockaddr())
        except OSError:
            sock.close()
            return None
        conn = http.client.HTTPConnection("localhost", timeout=PROBE_TIMEOUT)
        conn.sock = sock
        try:
            conn.request("GET", "/healthz", headers={"Host": "localhost"})
            resp = conn.getresponse()
            body = json.loads(resp.read() or b"null")
            return resp.status in (200, 503) and isinstance(body, dict) and "status" in body
        except (OSError, ValueError, http.client.HTTPException):
            return False
        finally:
            conn.close()


def check_bind(ctx: Context) -> Iterator[Finding]:
    """Toru can bind its address, or a running Toru already serves it."""
    bind = ctx.config.bind
    fix_bind = f"set bind in {ctx.config.home / 'toru.toml'} (or TORU_BIND)"
    try:
        address = Address.parse(bind)
    except ValueError as exc:
        yield problem(f"bind {bind!r}: {exc}", fix_bind)
        return
    served = address.served_by_toru()
    if served:
        return
    if served is False:
        yield problem(f"{bind} is served by a program that is not Toru", fix_bind)
        return
    if address.family == socket.AF_UNIX:
        yield from _check_unix_bind(Path(address.sockaddr))
        return
    try:
        with socket.socket(address.family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(address.sockaddr)
    except PermissionError:
        yield problem(
            f"cannot bind {bind}: ports below 1024 need root",
            f"bind a port >= 1024 or a Unix socket behind nginx; {fix_bind}",
        )
    except OSError as exc:
        yield problem(f"cannot bind {bind}: {exc.strerror or exc}", fix_bind)


def _check_unix_bind(path: Path) -> Iterator[Finding]:
    if path.exists() and not stat.S_ISSOCK(path.lstat().st_mode):
        yield problem(f"{path} exists and is not a socket", f"remove {path} or bind elsewhere")
    elif not path.parent.is_dir():
        yield warning(
            f"the socket's directory {path.parent} does not exist",
            f"mkdir -m 0750 {path.parent} (the shipped systemd units create /run/toru)",
        )
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        yield problem(
            f"{_user_name(os.getuid())} cannot create sockets in {path.parent}",
            "chown the directory to the user Toru runs as, or bind elsewhere",
        )


_UPSTREAM = re.compile(r"\bupstream\s+(\S+)\s*\{([^}]*)\}", re.S)
_SERVER = re.compile(r"^\s*server\s+([^\s;]+)", re.M)
_PROXY_PASS = re.compile(r"\bproxy_pass\s+https?://([^\s;/]+)")


def check_nginx(ctx: Context) -> Iterator[Finding]:
    """The nginx site proxies to the address Toru binds, that address answers, and nginx
    keeps its upstream connections alive."""
    site = ctx.nginx_site
    if site is None:
        return
    try:
        text = site.read_text()
    except OSError as exc:
        yield problem(f"cannot read nginx site {site}: {exc}", "give the site's path to --nginx")
        return
    upstreams = {name: body for name, body in _UPSTREAM.findall(text)}
    servers: list[tuple[str, str | None]] = []  # (address, upstream block or None)
    for target in _PROXY_PASS.findall(text):
        if target in upstreams:
            servers += [(s, target) for s in _SERVER.findall(upstreams[target])]
        else:
            servers.append((target, None))
    if not servers:
        yield problem(f"{site} has no proxy_pass to an upstream", "use deploy/nginx/toru.conf")
        return
    bind = ctx.config.bind
    if not any(_same_address(addr, bind) for addr, _ in servers):
        upstream = servers[0][0]
        yield problem(
            f"{site} proxies to {upstream} but Toru binds {bind}",
            f'set bind = "{upstream}" in {ctx.config.home / "toru.toml"} (or TORU_BIND), or '
            f"change the upstream in {site}",
        )
        return
    with contextlib.suppress(ValueError):
        if not Address.parse(bind).served_by_toru():
            yield problem(
                f"nginx's upstream {bind} does not answer as Toru: nginx would answer 502",
                "start Toru (systemctl start toru, or toru serve)",
            )
    for name in {block for addr, block in servers if block and _same_address(addr, bind)}:
        if not re.search(r"^\s*keepalive\s+\d+\s*;", upstreams[name], re.M):
            yield warning(
                f"upstream {name} in {site} has no keepalive: every request opens a new "
                "connection to gunicorn",
                "add `keepalive 32;` and `keepalive_timeout 1s;` to it (see deploy/nginx/toru.conf)",
            )


def _same_address(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return Address.parse(a).client_sockaddr() == Address.parse(b).client_sockaddr()
    except ValueError:
        return False


# ---------------------------------------------------------------------------------- report

CHECKS: tuple[Check, ...] = (
    check_modes,
    check_owners,
    check_disk,
    check_database,
    check_plugin_state,
    check_cgroups,
    check_plugin_user,
    check_uvloop,
    check_worker_class,
    check_bind,
    check_nginx,
)


def run_checks(ctx: Context) -> list[Finding]:
    """Every check's findings, in order; a check that crashes is itself a finding."""
    findings: list[Finding] = []
    for check in CHECKS:
        try:
            findings.extend(check(ctx))
        except Exception as exc:  # a bug in one check must not hide the others' results
            findings.append(problem(f"{check.__name__} failed: {exc!r}", "report this bug"))
    return findings


def parse_size(text: str) -> int:
    """``256M``, ``2G``, ``1048576``: bytes."""
    units = {"": 1, "K": 1024, "M": MiB, "G": 1024 * MiB, "T": 1024**4}
    m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", text.strip().upper())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) * units[m.group(2)]


def main(args: Any) -> int:
    """Entry point (see toru/cli.py): print findings, exit 1 if any is a problem."""
    home = getattr(args, "home", None) or os.environ.get("TORU_HOME") or os.getcwd()
    print(f"toru doctor: home {Path(home).resolve()}")
    try:
        config = load_config(home)
    except ConfigError as exc:
        print(f"problem: {exc}; fix: correct it (docs/operations.md, Configuration)")
        return 1
    if not config.home.is_dir():
        print(f"problem: {config.home} does not exist; fix: give --home of a Toru home")
        return 1
    nginx = Path(args.nginx) if getattr(args, "nginx", None) else None
    findings = run_checks(Context(config, parse_size(args.min_free), nginx))
    for f in findings:
        print(f.line())
    problems = sum(f.level == "problem" for f in findings)
    if findings:
        print(f"{problems} problem(s), {len(findings) - problems} warning(s)")
    else:
        print(f"all checks passed (bind {config.bind})")
    return 1 if problems else 0
