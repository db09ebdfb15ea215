// The host's own health: does the supervisor answer, Toru's version, the supervisor's uptime
// and the database's state (GET /api/system), plugins by state, versions, and the request and
// error rates from /metrics (counters sampled every few seconds, charted).

import { h, replace, tableHead } from "../dom.js";
import { formatDuration, formatMs, stateLabel } from "../format.js";
import { errorFrom, fetchWithin, get, getText } from "../http.js";
import { parseMetrics, requestTotals } from "../metrics.js";
import { rateChart } from "../sparkline.js";
import { pluginStore } from "../store.js";
import { pageHead, panel } from "./page.js";

const POLL_MS = 5000;
const KEEP = 60; // samples: five minutes at POLL_MS

const STATES = ["running", "starting", "backoff", "failed", "invalid", "changed", "stopped"];

/** GET `path` within the client timeout: {ok, ms, message}. */
async function probe(path) {
  const t0 = performance.now();
  try {
    const resp = await fetchWithin(path, { cache: "no-store", credentials: "same-origin" });
    const ms = performance.now() - t0;
    if (resp.ok) return { ok: true, ms, message: "answers" };
    return { ok: false, ms, message: (await errorFrom(resp)).message };
  } catch (err) {
    return { ok: false, ms: performance.now() - t0, message: err.message };
  }
}

/** GET /api/system: {version, supervisor: {started_at, uptime_s}, store: {ok, error?}}, or {error}. */
async function systemInfo() {
  try {
    return await get("/api/system");
  } catch (err) {
    return { error: err.message };
  }
}

/** The Toru version, supervisor uptime and database rows of the health panel. */
function systemStats(sys) {
  if (sys.error) return [stat("Toru", `Not reported: ${sys.error}`, "health-version", "bad")];
  const up = sys.supervisor?.uptime_s;
  const store = sys.store || {};
  return [
    stat("Toru version", sys.version || "?", "health-version"),
    stat("Supervisor uptime", up == null ? "?" : formatDuration(up), "health-uptime"),
    stat("Database", store.ok ? "OK" : `Damaged: ${store.error || "unknown"}`, "health-store", store.ok ? "ok" : "bad"),
  ];
}

function stat(label, value, testid, tone = "") {
  return h("div", { class: "sys-stat", dataset: { testid, tone } }, h("dt", { text: label }), h("dd", {}, value));
}

/** Render the system page; returns the cleanup. */
export function renderSystem(container, _params, shell) {
  shell.setTitle("System");
  let alive = true;
  let timer = null;
  const history = []; // [t, requests, errors]
  const health = h("dl", { class: "sys-stats", dataset: { testid: "system-health" } });
  const states = h("dl", { class: "sys-stats", dataset: { testid: "system-states" } });
  const chart = h("div", { dataset: { testid: "system-chart" } }, h("p", { class: "muted", text: "Sampling /metrics…" }));
  const versions = h("tbody", {});
  replace(
    container,
    pageHead("System", "This Toru host's own health, refreshed every 5 seconds."),
    h("div", { class: "cols" }, panel("Health", health), panel("Plugins by state", states)),
    panel("Requests and errors", [
      chart,
      h("p", {
        class: "muted note",
        text: "API and plugin-route requests per second in every worker (toru_http_requests_total, toru_proxy_request_duration_seconds); errors are 5xx answers.",
      }),
    ]),
    panel(
      "Versions",
      [
        h("div", { class: "table-wrap" }, h("table", { class: "users-table" }, tableHead(["Plugin"], ["Version"], ["State"]), versions)),
      ],
      { testid: "system-versions" },
    ),
  );

  const renderStates = (store) => {
    const counts = Object.fromEntries(STATES.map((s) => [s, 0]));
    for (const p of store.plugins) counts[p.state] = (counts[p.state] || 0) + 1;
    replace(
      states,
      STATES.map((s) =>
        stat(stateLabel(s), store.stale ? "?" : String(counts[s]), `state-count-${s}`, store.stale ? "" : counts[s] && ["backoff", "failed", "invalid", "changed"].includes(s) ? "bad" : ""),
      ),
    );
    replace(
      versions,
      store.plugins.map((p) =>
        h(
          "tr",
          {},
          h("td", { dataset: { label: "Plugin" } }, p.name || p.id),
          h("td", { dataset: { label: "Version" }, text: p.version || "—" }),
          h("td", { dataset: { label: "State" }, text: p.stale ? "Unknown" : stateLabel(p.state) }),
        ),
      ),
    );
  };

  const sampleMetrics = async () => {
    try {
      const totals = requestTotals(parseMetrics(await getText("/metrics")));
      history.push([Date.now() / 1000, totals.requests, totals.errors]);
      while (history.length > KEEP + 1) history.shift();
      const rates = { requests: [], errors: [] };
      for (let i = 1; i < history.length; i += 1) {
        const [t, r, e] = history[i];
        const [t0, r0, e0] = history[i - 1];
        const dt = Math.max(t - t0, 0.001);
        // A restarted worker's counters start again at 0: clamp instead of a negative rate.
        rates.requests.push([t, Math.max(0, r - r0) / dt]);
        rates.errors.push([t, Math.max(0, e - e0) / dt]);
      }
      if (!alive) return;
      if (rates.requests.length) {
        replace(
          chart,
          rateChart(
            [
              { name: "Requests", cls: "rate-requests", points: rates.requests },
              { name: "Errors", cls: "rate-errors", points: rates.errors },
            ],
            { label: "Request and error rate" },
          ),
        );
      }
    } catch (err) {
      if (!alive) return;
      const why = err.status === 401 || err.status === 403 ? "your session may not read /metrics" : err.message;
      replace(chart, h("p", { class: "muted", dataset: { testid: "system-metrics-error" }, text: `No metrics: ${why}.` }));
    }
  };

  const tick = async () => {
    const [sup, web, sys] = await Promise.all([probe("/healthz"), probe("/livez"), systemInfo(), sampleMetrics()]);
    if (!alive) return;
    replace(
      health,
      stat("Supervisor", sup.ok ? `Answers (${formatMs(sup.ms)})` : `Not answering: ${sup.message}`, "health-supervisor", sup.ok ? "ok" : "bad"),
      stat("Web worker", web.ok ? `Answers (${formatMs(web.ms)})` : `Not answering: ${web.message}`, "health-web", web.ok ? "ok" : "bad"),
      stat("Plugins installed", String(pluginStore.plugins.length), "health-plugins"),
      ...systemStats(sys),
    );
    timer = setTimeout(tick, POLL_MS);
  };
  const unsubscribe = pluginStore.subscribe(renderStates);
  tick();
  return () => {
    alive = false;
    clearTimeout(timer);
    unsubscribe();
  };
}
