"""One reply validator everywhere (``validate_http_reply``), against a real supervisor and a
real plugin process: a reply without ``status`` is 200 through the supervisor (the checker's
side is tests/sdk/test_check.py); a malformed one is 502 with the reason in the plugin's log
and events."""

from __future__ import annotations

import json

import pytest

from toru.errors import BadGateway

from .helpers import SupervisorProc, enable_on_disk, make_plugin, wait_for


def test_reply_without_status_is_200_and_a_bad_status_is_502_with_the_reason(home):
    make_plugin(home / "plugins", "lax")
    enable_on_disk(home, "lax")
    with SupervisorProc(home, env={"TORU_HEALTH_INTERVAL": "30"}) as sup:
        pid = sup.wait_state("lax", "running")["pid"]
        resp = sup.client.http("/lax", "GET", "/no-status")
        assert resp.status == 200 and json.loads(resp.body) == {"status": "absent"}

        with pytest.raises(BadGateway) as err:
            sup.client.http("/lax", "GET", "/bad-status")
        reason = "the reply's status 'teapot' is not an integer 100-599"
        assert reason in err.value.message

        def bad_reply_event() -> list[dict]:
            events = sup.info("lax")["events"]
            return [e for e in events if e["event_type"] == "bad_reply"]

        (event,) = wait_for(bad_reply_event)
        assert event["details"] == {"reason": reason}
        logs = sup.call("logs", {"plugin": "lax", "page_size": 100})["entries"]
        lines = [e for e in logs if e.get("message") == "supervisor: plugin bad_reply"]
        assert lines and lines[0]["details"] == {"reason": reason}

        # a second bad reply within the window is counted and answered 502, not re-recorded
        with pytest.raises(BadGateway):
            sup.client.http("/lax", "GET", "/bad-status")
        assert len(bad_reply_event()) == 1
        info = sup.info("lax")
        assert info["state"] == "running" and info["pid"] == pid  # a bad reply is no crash
