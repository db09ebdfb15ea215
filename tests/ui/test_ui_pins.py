"""The plugin manager's Install upload and the Approve panel of a changed binary, in Chromium
against a real ``toru serve`` (supervisor/pins.py, docs/SECURITY.md "Binary pinning")."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers import ToruServer
from tests.supervisor.helpers import make_plugin, wait_for
from tests.ui.conftest import USER_PASSWORD, WAIT_MS, serve

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

from tests.ui.helpers import add_user, api, plugin_info, sign_in  # noqa: E402

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server() -> Iterator[ToruServer]:
    def build(home: Path) -> list[Path]:
        return [make_plugin(home / "build", "ui-pin")]

    yield from serve(build, {"TORU_RESCAN_INTERVAL": "0.5"}, "toru-uip-")


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_install_upload_from_the_manager(new_page, server, console, tmp_path):
    console.allow("404", "/bundle.js")  # the test plugin has no frontend
    src = make_plugin(tmp_path, "ui-inst")
    page = new_page()
    sign_in(page)
    page.get_by_test_id("install-file").set_input_files(str(src))
    card = page.get_by_test_id("plugin-card-ui-inst")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Stopped")  # new: disabled
    assert (server.home / "plugins" / "ui-inst.binary").read_bytes() == src.read_bytes()
    # the same plugin again, ticked "enable": an upgrade that also starts it
    src.write_text(src.read_text() + "# v2\n")
    page.get_by_test_id("install-enable").check()
    page.get_by_test_id("install-file").set_input_files(str(src))
    expect(card.get_by_test_id("plugin-state")).to_have_text("Running")
    assert sha(server.home / "plugins" / "ui-inst.binary") == sha(src)


def test_changed_binary_shows_both_hashes_and_approve(
    new_page, server, admin, console, tmp_path, shots
):
    console.allow("404", "/bundle.js")  # the test plugin has no frontend
    marker = tmp_path / "ran"
    api(server, admin, "POST", "/api/plugins/ui-pin/enable")
    binary = server.home / "plugins" / "ui-pin.binary"
    old = sha(binary)
    pid = plugin_info(server, admin, "ui-pin")["pid"]
    evil = server.home / "plugins" / ".evil"
    evil.write_text(
        binary.read_text().replace("#!/bin/sh\n", f'#!/bin/sh\necho ran >> "{marker}"\n')
    )
    evil.chmod(0o755)
    os.replace(evil, binary)  # an attacker's swap
    new = sha(binary)
    wait_for(lambda: plugin_info(server, admin, "ui-pin")["binary_change"])
    os.kill(pid, signal.SIGKILL)  # the old version stops serving: the new one is not run
    wait_for(lambda: plugin_info(server, admin, "ui-pin")["state"] == "changed")

    add_user(server, admin, "ursula", USER_PASSWORD)
    viewer = new_page()
    sign_in(viewer, "ursula", USER_PASSWORD)
    notice = viewer.get_by_test_id("plugin-card-ui-pin").get_by_test_id("binary-change")
    expect(notice).to_be_visible()
    expect(notice.get_by_test_id("found-hash")).to_have_text(new)
    assert viewer.get_by_test_id("approve-ui-pin").count() == 0  # users cannot approve
    viewer.goto("/#/plugins/ui-pin")  # the details page says the same
    expect(viewer.get_by_test_id("binary-change").get_by_test_id("pinned-hash")).to_have_text(old)
    assert viewer.get_by_test_id("approve-ui-pin").count() == 0

    page = new_page()
    sign_in(page)
    card = page.get_by_test_id("plugin-card-ui-pin")
    expect(card.get_by_test_id("plugin-state")).to_have_text("Changed")
    expect(card.get_by_test_id("pinned-hash")).to_have_text(old)
    expect(card.get_by_test_id("found-hash")).to_have_text(new)
    assert not marker.exists()
    expect(card.get_by_test_id("restart-ui-pin")).to_be_hidden()  # Approve is the action
    card.screenshot(path=str(shots / "pins-changed-card.png"))
    page.get_by_test_id("approve-ui-pin").click()
    expect(card.get_by_test_id("plugin-state")).to_have_text("Running", timeout=WAIT_MS)
    expect(card.get_by_test_id("binary-change")).to_be_hidden()
    expect(card.get_by_test_id("restart-ui-pin")).to_be_visible()
    assert marker.exists()
