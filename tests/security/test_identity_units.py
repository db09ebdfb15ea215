"""Unit tests of toru/supervisor/identity.py, the new settings and the socket directory."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess

import pytest

from toru.config import ConfigError, load_config
from toru.supervisor.identity import (
    IdentityError,
    PerPluginUids,
    PluginIdentities,
    create_system_user,
    resolve,
    shared_identity,
)
from toru.supervisor.launcher import own_socket_dir, plugin_socket

from .helpers import needs_root


def test_per_plugin_uids_are_deterministic_recorded_and_distinct(tmp_path):
    path = tmp_path / "plugin-uids.json"
    uids = PerPluginUids(path, (70000, 70009))
    a, b = uids.uid_for("alpha"), uids.uid_for("beta")
    assert a != b and 70000 <= a <= 70009 and 70000 <= b <= 70009
    assert json.loads(path.read_text()) == {"alpha": a, "beta": b}
    again = PerPluginUids(tmp_path / "other.json", (70000, 70009))
    assert again.uid_for("alpha") == a  # the same hash choice on a fresh file
    assert PerPluginUids(path, (70000, 70009)).uid_for("beta") == b  # read back


def test_per_plugin_uids_skip_accounts_and_run_out(tmp_path):
    nobody = pwd.getpwnam("nobody").pw_uid  # an account: never handed to a plugin
    assert not _has_account(nobody + 1), "pick another free uid for this test"
    uids = PerPluginUids(tmp_path / "u.json", (nobody, nobody + 1))
    assert uids.uid_for("a") == nobody + 1
    with pytest.raises(IdentityError, match="exhausted"):
        uids.uid_for("b")


def _has_account(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_broken_uid_file_is_an_error_naming_it(tmp_path):
    path = tmp_path / "plugin-uids.json"
    path.write_text("{not json")
    with pytest.raises(IdentityError, match=r"plugin-uids\.json"):
        PerPluginUids(path, (70000, 70009))


def test_shared_identity_unknown_user_or_group_is_an_error():
    with pytest.raises(IdentityError, match="no such user"):
        shared_identity("no-such-user-here", None, lambda m: None)
    with pytest.raises(IdentityError, match="no such group"):
        shared_identity(str(os.geteuid()), "no-such-group-here", lambda m: None)


def test_own_uid_is_self_and_a_bare_uid_needs_no_account():
    me = shared_identity(str(os.geteuid()), None, lambda m: None)
    assert me.is_self and me.uid == os.geteuid()
    bare = shared_identity("70123", None, lambda m: None)
    assert (bare.uid, bare.gid, bare.is_self) == (70123, 70123, False)


def test_per_plugin_identity_uses_the_uid_as_gid(tmp_path):
    ids = resolve(str(os.geteuid()), None, "per-plugin", (70000, 70009), tmp_path / "u", print)
    assert isinstance(ids, PluginIdentities)
    one = ids.for_plugin("alpha")
    assert one.uid == one.gid and not one.is_self
    assert "a uid of its own" in ids.describe()


def test_settings_parse_and_reject(tmp_path):
    c = load_config(tmp_path, env={})
    assert (c.plugins_user, c.plugins_isolation, c.plugins_uid_range) == (
        None,
        "shared",
        (70000, 79999),
    )
    env = {"TORU_PLUGINS_ISOLATION": "per-plugin", "TORU_PLUGINS_UID_RANGE": "100-200"}
    c = load_config(tmp_path, env=env)
    assert (c.plugins_isolation, c.plugins_uid_range) == ("per-plugin", (100, 200))
    assert load_config(tmp_path, env=c.to_env()).plugins_uid_range == (100, 200)
    assert "TORU_PLUGINS_USER" not in c.to_env()  # unset stays unset in the children
    for bad in ({"TORU_PLUGINS_ISOLATION": "none"}, {"TORU_PLUGINS_UID_RANGE": "9-1"}):
        with pytest.raises(ConfigError):
            load_config(tmp_path, env=bad)


def test_socket_directory_is_fresh_private_and_never_a_symlink(tmp_path):
    sock = plugin_socket(tmp_path / "p", "alpha")
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "p").mkdir()
    sock.parent.symlink_to(target)  # left by a plugin: must not be followed
    own_socket_dir(sock.parent, None)
    assert not sock.parent.is_symlink() and target.exists()
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    sock.write_text("stale")
    own_socket_dir(sock.parent, None)
    assert not sock.exists()


@needs_root
def test_socket_directory_belongs_to_the_plugin_user(tmp_path):
    ids = resolve("70123", None, "shared", (1, 2), tmp_path / "u", print)
    directory = plugin_socket(tmp_path / "p", "alpha").parent
    own_socket_dir(directory, ids.for_plugin("alpha"))
    st = directory.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (70123, 70123, 0o700)


def test_plugins_group_by_name_or_number_overrides_the_primary_group():
    nobody = pwd.getpwnam("nobody")
    by_name = shared_identity("nobody", "nogroup", lambda m: None)
    assert (by_name.uid, by_name.gid) == (nobody.pw_uid, grp.getgrnam("nogroup").gr_gid)
    assert shared_identity("nobody", "4242", lambda m: None).gid == 4242
    assert shared_identity("nobody", None, lambda m: None).gid == nobody.pw_gid


@needs_root
def test_without_its_user_and_no_way_to_create_it_plugins_fall_back_to_nobody(monkeypatch):
    from toru.supervisor import identity

    monkeypatch.setattr(identity, "DEFAULT_USER", "toru-no-such-plugin-user")
    monkeypatch.setattr(identity, "create_system_user", lambda name: "useradd: Permission denied")
    warned: list[str] = []
    got = shared_identity(None, None, warned.append)
    assert (got.name, got.uid) == ("nobody", pwd.getpwnam("nobody").pw_uid)
    assert len(warned) == 1 and "useradd: Permission denied" in warned[0] and "nobody" in warned[0]


@needs_root
def test_the_plugin_user_is_created_as_a_system_user_without_home_or_shell():
    name = f"toru-t{os.getpid() % 100000}"
    try:
        assert create_system_user(name) is None
        entry = pwd.getpwnam(name)
        assert entry.pw_shell == "/usr/sbin/nologin" and not os.path.exists(entry.pw_dir)
        assert entry.pw_uid < 1000  # --system
        assert create_system_user(name) is None  # already there: fine
    finally:
        subprocess.run(["userdel", name], capture_output=True)
