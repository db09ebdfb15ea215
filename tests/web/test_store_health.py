"""Through ``toru serve``: a damaged config.json shows up as ``X-Toru-Warnings`` on
``GET /api/plugins`` (the body stays the bare list), and a damaged database makes
``/healthz`` answer 503 ``store_unavailable`` (issue 11 item 5)."""

from __future__ import annotations

import json

from tests.servers import ToruServer
from tests.supervisor.helpers import damage_database
from tests.web.webtest_plugin import install

TRUNCATED = '{"version": 1, "plugins": {"web-test": {"enabled": true}, "other": {"enabled": tr'


def _warnings(headers: dict[str, str]) -> list[dict]:
    return json.loads(headers.get("x-toru-warnings", "[]"))


def test_a_damaged_config_is_a_warning_on_the_plugin_list(short_home):
    install(short_home / "plugins")
    state = short_home / "plugins" / ".metadata" / "config.json"
    state.parent.mkdir(parents=True)
    state.write_text(TRUNCATED)
    with ToruServer(short_home) as s:
        cookie, _ = s.login()
        status, headers, body = s.request("GET", "/api/plugins", cookie=cookie)
        assert status == 200
        plugins = json.loads(body)
        assert isinstance(plugins, list)  # backward compatible: still the bare list
        [web_test] = [p for p in plugins if p["id"] == "web-test"]
        assert web_test["enabled"] is True  # recovered from the truncated file
        [warning] = _warnings(headers)
        assert warning["code"] == "plugin_state_corrupt"
        assert warning["kept_as"].startswith(str(state) + ".corrupt-")
        assert s.request("GET", "/healthz")[0] == 200


def test_a_damaged_database_fails_healthz(short_home):
    db = short_home / "var" / "toru.db"
    db.parent.mkdir(parents=True)
    damage_database(db)
    with ToruServer(short_home).start(healthz=503) as s:
        status, _, body = s.request("GET", "/healthz")
        reply = json.loads(body)
        assert status == 503 and reply["error"] == "store_unavailable"
        assert "malformed" in reply["message"]
        cookie, _ = s.login()  # the users table is intact: the operator can still look
        status, headers, _ = s.request("GET", "/api/plugins", cookie=cookie)
        assert status == 200
        assert [w["code"] for w in _warnings(headers)] == ["store_damaged"]


def test_a_sound_home_has_no_warnings(short_home):
    with ToruServer(short_home) as s:
        cookie, _ = s.login()
        status, headers, _ = s.request("GET", "/api/plugins", cookie=cookie)
        assert status == 200 and "x-toru-warnings" not in headers
