"""``POST /api/plugins/install`` (multipart) and ``POST /api/plugins/:id/approve`` through a
real ``toru serve`` (gunicorn workers, the supervisor, real plugin executables)."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests import timing
from tests.servers import ToruServer
from tests.supervisor.helpers import MISBEHAVE, wait_for

USER_PW = "user-pass-456"
BODY_LIMIT = 65536


def script(plugin_id: str, marker: Path | None = None, pad: int = 0) -> bytes:
    """A plugin executable (misbehave.py ``good``); ``marker`` is written if it ever runs."""
    touch = f'echo ran >> "{marker}"\n' if marker else ""
    body = f'#!/bin/sh\n{touch}exec "{sys.executable}" -I "{MISBEHAVE}" good {plugin_id} "$@"\n'
    return body.encode() + b"#" * pad + (b"\n" if pad else b"")


def multipart(fields: dict[str, bytes | str], file_field: str = "file") -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = b""
    for name, value in fields.items():
        data = value.encode() if isinstance(value, str) else value
        disp = f'form-data; name="{name}"'
        if name == file_field:
            disp += '; filename="plugin.binary"'
        out += f"--{boundary}\r\nContent-Disposition: {disp}\r\n".encode()
        if name == file_field:
            out += b"Content-Type: application/octet-stream\r\n"
        out += b"\r\n" + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


@pytest.fixture(scope="module")
def srv():
    home = Path(tempfile.mkdtemp(prefix="toru-i-", dir="/tmp"))
    s = ToruServer(
        home,
        workers=2,
        env={
            "TORU_BODY_LIMIT": str(BODY_LIMIT),
            "TORU_INSTALL_MAX_BYTES": str(1 << 20),
            "TORU_RESCAN_INTERVAL": "0.5",
        },
    )
    s.start()
    try:
        s.admin = s.login()
        s.user = s.add_user(s.admin, "bob", USER_PW)
        yield s
    finally:
        s.stop()


def upload(srv: ToruServer, fields: dict, who: str = "admin", **kw) -> tuple[int, dict]:
    body, ctype = multipart(fields)
    cookie, csrf = srv.admin if who == "admin" else srv.user
    status, _, data = srv.request(
        "POST",
        "/api/plugins/install",
        body,
        cookie=cookie,
        csrf=csrf,
        headers={"Content-Type": ctype, **kw.get("headers", {})},
        timeout=timing.WAIT,
    )
    return status, json.loads(data) if data else {}


def admin_json(srv: ToruServer, method: str, path: str, body=None) -> tuple[int, dict]:
    return srv.json(method, path, body, cookie=srv.admin[0], csrf=srv.admin[1], timeout=timing.WAIT)


def listing(srv: ToruServer) -> list[str]:
    return sorted(p.name for p in (srv.home / "plugins").iterdir())


def test_upload_installs_beyond_the_api_body_limit_and_stays_disabled(srv):
    data = script("up-one", pad=3 * BODY_LIMIT)  # larger than TORU_BODY_LIMIT
    status, result = upload(srv, {"file": data})
    assert status == 200, result
    assert result["id"] == "up-one" and result["replaced"] is False
    assert result["plugin"]["state"] == "stopped"  # new plugins start disabled
    target = srv.home / "plugins" / "up-one.binary"
    assert target.read_bytes() == data and os.access(target, os.X_OK)
    pins = json.loads((srv.home / "var" / "binary-pins.json").read_text())["pins"]
    assert pins["up-one"]["sha256"] == result["sha256"] and pins["up-one"]["how"] == "install"
    assert not [n for n in listing(srv) if n.startswith(".install-")]


def test_upload_with_enable_runs_and_a_second_upload_upgrades(srv):
    status, result = upload(srv, {"file": script("up-two"), "enable": "true"})
    assert status == 200, result
    assert result["plugin"]["state"] == "running"
    pid = result["plugin"]["pid"]
    status, result = upload(srv, {"file": script("up-two", pad=10)})
    assert status == 200 and result["replaced"] is True, result
    assert result["plugin"]["state"] == "running" and result["plugin"]["pid"] != pid
    assert result["plugin"]["binary_change"] is None


@pytest.mark.parametrize(
    "fields, status, code",
    [
        ({"enable": "true"}, 400, "bad_upload"),  # no file part
        ({"file": b"\x7fELF\x00garbage"}, 400, "bad_binary"),  # not an executable
        ({"file": b"just text, no interpreter\n"}, 400, "bad_binary"),
        ({"file": script("x", pad=0).replace(b"good", b"bad-metadata")}, 400, "bad_binary"),
        ({"file": b""}, 400, "bad_upload"),
        ({"file": script("up-three"), "enable": "maybe"}, 400, "bad_field"),
        ({"file": script("up-three"), "other": "x"}, 400, "bad_field"),
        ({"file": script("big", pad=(1 << 20) + 1)}, 413, "payload_too_large"),
    ],
)
def test_bad_uploads_are_4xx_and_leave_nothing(srv, fields, status, code):
    before = listing(srv)
    got, body = upload(srv, fields)
    assert (got, body.get("error")) == (status, code), body
    assert listing(srv) == before


def test_install_clash_non_multipart_and_roles(srv):
    (srv.home / "plugins" / "other-name.binary").write_bytes(script("clash"))
    (srv.home / "plugins" / "other-name.binary").chmod(0o755)
    admin_json(srv, "POST", "/api/plugins/rescan")
    wait_for(lambda: admin_json(srv, "GET", "/api/plugins/clash")[0] == 200, timing.WAIT)
    before = listing(srv)
    status, body = upload(srv, {"file": script("clash")})
    assert status == 409 and body["error"] == "id_clash", body
    assert "other-name.binary" in body["message"]
    assert listing(srv) == before
    status, body = upload(srv, {"file": script("up-four")}, who="user")
    assert status == 403, body
    status, _, _ = srv.request(
        "POST",
        "/api/plugins/install",
        b"{}",
        cookie=srv.admin[0],
        csrf=srv.admin[1],
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert listing(srv) == before


def test_approve_through_the_api(srv, tmp_path):
    marker = tmp_path / "ran"
    status, result = upload(srv, {"file": script("pinned"), "enable": "true"})
    assert status == 200 and result["plugin"]["state"] == "running", result
    pid, old = result["plugin"]["pid"], result["sha256"]
    evil = srv.home / "plugins" / ".evil"
    evil.write_bytes(script("pinned", marker))
    evil.chmod(0o755)
    os.replace(evil, srv.home / "plugins" / "pinned.binary")  # as an attacker would
    info = wait_for(
        lambda: (i := admin_json(srv, "GET", "/api/plugins/pinned")[1])["binary_change"] and i,
        timing.WAIT,
    )
    assert info["state"] == "running" and info["pid"] == pid  # the old one keeps serving
    assert info["binary_change"]["pinned_sha256"] == old
    new = info["binary_change"]["found_sha256"]
    assert any(e["event_type"] == "binary_changed" for e in info["events"])
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: admin_json(srv, "GET", "/api/plugins/pinned")[1]["state"] == "changed")
    status, _ = srv.json(
        "POST", "/api/plugins/pinned/approve", cookie=srv.user[0], csrf=srv.user[1]
    )
    assert status == 403
    assert not marker.exists()
    status, body = admin_json(srv, "POST", "/api/plugins/pinned/approve")
    assert status == 200 and body["state"] == "running", body
    assert marker.exists()
    status, body = admin_json(srv, "POST", "/api/plugins/pinned/approve")
    assert status == 409 and body["error"] == "no_change"
    pins = json.loads((srv.home / "var" / "binary-pins.json").read_text())["pins"]
    assert pins["pinned"]["sha256"] == new and pins["pinned"]["how"] == "approve"
