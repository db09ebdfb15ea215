"""The shipped monitoring files against real programs.

- promtool checks and unit-tests deploy/prometheus/alerts.yml (one test per alert);
- a real Debian ``prometheus``, configured from deploy/prometheus/prometheus.yml (bearer
  token, 1 s scrapes), scrapes a real ``toru serve`` while the test drives plugin routes, a
  KV call, a timeout and a crash; then every PromQL expression of the Grafana dashboard runs
  through Prometheus's HTTP API and must return data, the ``plugin`` template variable must
  list the plugin, and the alert rules must load and evaluate cleanly against real series.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import time

import pytest

from tests import timing
from tests.deploy.prom import DEPLOY, Prometheus, shipped_config
from tests.servers import ROOT, ToruServer
from tests.web.webtest_plugin import install

pytestmark = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="Debian's prometheus package is not installed (scripts/install-system-deps)",
)

DASHBOARD = ROOT / "deploy" / "grafana" / "toru-dashboard.json"
# What the test puts in for Grafana's built-ins: a window that spans the whole test's traffic.
RATE_INTERVAL = "5m"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["promtool", *args], cwd=DEPLOY, capture_output=True, text=True, timeout=120
    )


def test_alert_rules_check_and_unit_tests():
    cp = promtool("check", "rules", "alerts.yml")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    cp = promtool("test", "rules", "alerts_test.yml")
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # one unit test group per alert: every alert's name appears as some test's alertname
    alerts = set(re.findall(r"^\s+- alert: (\w+)", (DEPLOY / "alerts.yml").read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (DEPLOY / "alerts_test.yml").read_text()))
    assert len(alerts) >= 8 and alerts == tested, alerts ^ tested


def dashboard() -> tuple[list[tuple[str, str]], list[dict]]:
    """``[(panel title, expr)]`` and the template variables of the shipped dashboard."""
    data = json.loads(DASHBOARD.read_text())
    exprs = []
    panels = list(data["panels"])
    while panels:
        panel = panels.pop(0)
        panels.extend(panel.get("panels", []))  # rows hold their panels
        for target in panel.get("targets", []):
            if target.get("expr"):
                exprs.append((panel["title"], target["expr"]))
    return exprs, data.get("templating", {}).get("list", [])


def substitute(expr: str, plugin: str) -> str:
    """Grafana's variables as Grafana would expand them for a Prometheus data source."""
    out = expr.replace("$__rate_interval", RATE_INTERVAL).replace("$__interval", "15s")
    out = out.replace("${plugin}", plugin).replace("$plugin", plugin)
    assert "$" not in out, f"unknown Grafana variable left in {out!r}"
    return out


def has_number(result: list[dict]) -> bool:
    return any(not math.isnan(float(r["value"][1])) for r in result)


def poll(fn, what: str):
    deadline = time.monotonic() + timing.WAIT
    while not (value := fn()):
        assert time.monotonic() < deadline, f"{what} did not happen within {timing.WAIT}s"
        time.sleep(0.2)
    return value


def route_status(server: ToruServer, method: str, path: str, token: str) -> int | None:
    try:
        return server.request(method, f"/api/plugins/route/webtest{path}", token=token)[0]
    except OSError:
        return None


@pytest.fixture
def scraped_toru(short_home):
    """A ``toru serve`` with the web-test plugin, scraped by Prometheus every second."""
    install(short_home / "plugins")
    server = ToruServer(
        short_home,
        enable=["web-test"],
        env={
            # /hang sleeps an hour; this product timeout turns it into a 504, and is still
            # long enough that the quick requests never hit it on a loaded machine
            "TORU_HTTP_TIMEOUT": str(timing.scaled(3)),
            "TORU_RESTART_BACKOFF": "0.2",
        },
    )
    server.start()
    prom = None
    try:
        token = server.toru("user", "--home", str(short_home), "token", "admin", "--name", "p")
        token_file = short_home / "prometheus.token"
        token_file.write_text(token.strip() + "\n")
        prom = Prometheus(short_home / "prom", shipped_config(server.bind, token_file))
        cp = promtool("check", "config", str(prom.config))
        assert cp.returncode == 0, cp.stdout + cp.stderr
        prom.start()
        yield server, prom, token.strip()
    finally:
        if prom is not None:
            prom.stop()
        server.stop()


def scraped_twice(prom: Prometheus, series: str) -> None:
    """Wait until Prometheus holds two samples in which ``series`` is true (rate() needs two)."""
    prom.wait_for(f"count_over_time(({series})[{RATE_INTERVAL}:1s]) >= 2")


def drive_traffic(server: ToruServer, prom: Prometheus, token: str) -> None:
    """Plugin routes, a KV call, API calls, a timeout (504) and a crash (502, restart)."""
    poll(lambda: route_status(server, "GET", "/pid", token) == 200, "web-test running")
    for i in range(10):
        assert route_status(server, "GET", f"/slow?ms=1&id={i}", token) == 200
    status, body = server.json(
        "POST", "/api/plugins/web-test/kv", {"action": "set", "key": "k", "value": "v"}, token=token
    )
    assert status == 200, body
    assert server.json("GET", "/api/plugins", token=token)[0] == 200
    assert route_status(server, "GET", "/hang", token) == 504
    # NOTE: the workers create a plugin's 5xx series at its first 5xx, so Prometheus must
    # scrape it once before more 5xx come, or rate() could never see them (the first
    # errors of a kind are invisible to rate(); docs/operations.md, "Prometheus")
    scraped_twice(prom, 'toru_proxy_request_duration_seconds_count{code_class="5xx"}')
    # two more 5xx that rate() sees for sure: over 5% of the ~20 requests (ToruProxy5xxRatioHigh)
    assert route_status(server, "GET", "/hang", token) == 504
    assert route_status(server, "POST", "/crash", token) == 502
    poll(lambda: route_status(server, "GET", "/pid", token) == 200, "web-test restarted")
    for i in range(3):
        assert route_status(server, "GET", f"/slow?ms=1&id=after-{i}", token) == 200


def test_dashboard_queries_and_rules_against_real_prometheus(scraped_toru):
    server, prom, token = scraped_toru
    up = prom.wait_for('up{job="toru"} == 1')  # scraped with the bearer token
    assert len(up) == 1
    drive_traffic(server, prom, token)
    for series in (
        'toru_plugin_restarts_total{plugin="web-test"} >= 1',
        'toru_proxy_errors_total{plugin="web-test",kind="timeout"} >= 1',
        'sum(toru_proxy_request_duration_seconds_count{plugin="web-test"}) >= 18',
    ):
        scraped_twice(prom, series)

    exprs, variables = dashboard()
    assert len(exprs) >= 15
    # the template variable: label_values(toru_plugin_up, plugin) is Grafana's call of
    # /api/v1/label/plugin/values?match[]=toru_plugin_up
    plugin_var = next(v for v in variables if v["name"] == "plugin")
    m = re.fullmatch(r"label_values\((\w+), (\w+)\)", plugin_var["definition"])
    assert m, plugin_var["definition"]
    values = prom.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)})
    assert values == ["web-test"]

    empty = []
    for plugin in (plugin_var["allValue"], "web-test"):  # "All", then the one plugin
        for title, expr in exprs:
            query = substitute(expr, plugin)
            result = prom.query(query)
            if not has_number(result):
                empty.append(f"{title}: {query} -> {result}")
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)

    # the panels count what happened: the one crash and restart, the timeout. A counter
    # that is born at its first increment would show 0 here (rate() needs a sample before)
    for counter in ("toru_plugin_restarts_total", "toru_plugin_crashes_total"):
        (increase,) = prom.query(f'increase({counter}{{plugin="web-test"}}[1h])')
        assert float(increase["value"][1]) >= 0.9, (counter, increase)
    # the errors panel shows both failure kinds the test caused
    kinds = {r["metric"]["kind"] for r in prom.query("toru_proxy_errors_total")}
    assert {"timeout", "unavailable"} <= kinds or {"timeout", "bad_response"} <= kinds, kinds

    # the alert rules are loaded, evaluate against real series without errors, and the two
    # "Toru is down" alerts stay quiet while Toru is up
    groups = prom.api("rules")["groups"]
    rules = {r["name"]: r for g in groups for r in g["rules"]}
    assert len(rules) >= 8
    assert all(r["health"] == "ok" for r in rules.values()), rules
    assert rules["ToruDown"]["state"] == "inactive"
    assert rules["ToruSupervisorDown"]["state"] == "inactive"
    (up,) = prom.query("toru_supervisor_up")  # what ToruSupervisorDown watches
    assert up["value"][1] == "1", up

    # and one reacts to what the test did: the second 504 and the 502 are over 5% of the
    # requests, so the ratio alert is pending (its `for:` is 5 minutes), which shows its
    # label matchers fit Toru's real series
    def ratio_alert() -> list:
        return [
            a
            for g in prom.api("rules")["groups"]
            for r in g["rules"]
            if r["name"] == "ToruProxy5xxRatioHigh"
            for a in r["alerts"]
        ]

    (alert,) = poll(ratio_alert, "ToruProxy5xxRatioHigh pending")
    assert alert["state"] == "pending" and alert["labels"]["plugin"] == "web-test", alert
