// A small inline SVG of recent latency (p50, p99) and restarts from GET /api/plugins/:id/stats
// — operators would rather look than read.

import { h, svg } from "./dom.js";
import { formatMs } from "./format.js";
import { get } from "./http.js";

const PAD = 2;
const WINDOW_S = 300; // the API keeps 30 buckets of 10 s

const toSeconds = (t) => (typeof t === "number" ? t : Date.parse(t) / 1000);

/**
 * Render a sparkline element for a stats result (or null while loading). `crashes` are Unix
 * seconds of crash events: red marks like restarts, so a plugin that never came back up
 * (restarts 0) still shows its failures.
 */
export function sparkline(stats, { label = "Recent latency", wide = false, crashes = [] } = {}) {
  // The wide variant stretches to its panel (non-scaling strokes keep lines crisp).
  const W = wide ? 480 : 132;
  const H = wide ? 96 : 34;
  const latency = (stats?.latency || []).filter((b) => b && b.count > 0);
  const restarts = (stats?.restarts || []).filter((b) => b && b.count > 0);
  const times = [...(stats?.latency || []), ...(stats?.restarts || [])]
    .map((b) => toSeconds(b.t))
    .filter((t) => Number.isFinite(t));
  const hi = Math.max(Date.now() / 1000, ...times);
  const lo = hi - WINDOW_S;
  const marks = crashes.filter((t) => t >= lo);
  const x = (t) => PAD + ((toSeconds(t) - lo) / Math.max(hi - lo, 1)) * (W - 2 * PAD);
  const maxMs = Math.max(1, ...latency.map((b) => Number(b.p99_ms) || 0));
  const y = (ms) => H - 6 - (Number(ms) / maxMs) * (H - 10);

  const chart = svg("svg", {
    width: W,
    height: H,
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: wide ? "none" : null,
    "aria-hidden": "true",
    focusable: "false",
  });
  chart.append(
    svg("line", {
      class: "spark-base",
      x1: 0,
      x2: W,
      y1: H - 5.5,
      y2: H - 5.5,
      stroke: "#e2e5ea",
      "stroke-width": 1,
      "vector-effect": "non-scaling-stroke",
    }),
  );
  const line = (key, color, width) => {
    if (!latency.length) return;
    const pts = latency.map((b) => `${x(b.t).toFixed(1)},${y(b[key]).toFixed(1)}`);
    if (pts.length === 1) pts.push(`${(W - PAD).toFixed(1)},${y(latency[0][key]).toFixed(1)}`);
    chart.append(
      svg("polyline", {
        points: pts.join(" "),
        fill: "none",
        stroke: color,
        "stroke-width": width,
        "stroke-linejoin": "round",
        "stroke-linecap": "round",
        "vector-effect": "non-scaling-stroke",
      }),
    );
  };
  line("p99_ms", "#f59e0b", 1.4);
  line("p50_ms", "#0f766e", 1.8);
  const mark = (t, kind) => {
    const rx = x(t).toFixed(1);
    chart.append(
      svg("line", {
        class: `spark-mark spark-${kind}`,
        x1: rx,
        x2: rx,
        y1: 2,
        y2: H - 3,
        stroke: "#dc2626",
        "stroke-width": 1.5,
        "vector-effect": "non-scaling-stroke",
      }),
    );
  };
  for (const r of restarts) mark(r.t, "restart");
  for (const t of marks) mark(t, "crash");

  const last = latency[latency.length - 1];
  const restartCount = restarts.reduce((n, r) => n + Number(r.count || 0), 0);
  const restartText =
    `${restartCount} restart${restartCount === 1 ? "" : "s"}` +
    (marks.length ? `, ${marks.length} crash${marks.length === 1 ? "" : "es"}` : "");
  const legend = h("span", { class: "spark-legend" });
  if (!stats) {
    legend.append(h("span", { text: "Loading activity…" }));
  } else if (!last && !restartCount && !marks.length) {
    legend.append(h("span", { text: "No recent requests" }));
  } else {
    if (last) {
      legend.append(
        h("span", {}, h("i", { class: "key key-p50" }), `p50 ${formatMs(last.p50_ms)}`),
        h("span", {}, h("i", { class: "key key-p99" }), `p99 ${formatMs(last.p99_ms)}`),
      );
    }
    if (restartCount || marks.length) {
      legend.append(
        h("span", {}, h("i", { class: "key key-restart" }), restartText),
      );
    }
  }
  const summary = last
    ? `${label}: p50 ${formatMs(last.p50_ms)}, p99 ${formatMs(last.p99_ms)}, ${restartText} in the last 5 minutes`
    : `${label}: no requests, ${restartText} in the last 5 minutes`;
  return h(
    "div",
    { class: wide ? "spark spark-wide" : "spark", role: "img", "aria-label": summary, title: summary },
    chart,
    legend,
  );
}

/** Fetch stats for `pluginId`; resolves to null when the API cannot say. */
export async function fetchStats(pluginId) {
  try {
    return await get(`/api/plugins/${encodeURIComponent(pluginId)}/stats`);
  } catch {
    return { latency: [], restarts: [] };
  }
}

/**
 * A small line chart of `series` ([{name, cls, points: [[unixSeconds, value], ...]}]) on a
 * shared time axis; for the system page's request and error rates.
 */
export function rateChart(series, { label, unit = "/s" }) {
  const W = 480;
  const H = 96;
  const all = series.flatMap((s) => s.points);
  const t0 = Math.min(...all.map((p) => p[0]), Date.now() / 1000 - 60);
  const t1 = Math.max(...all.map((p) => p[0]), t0 + 1);
  const max = Math.max(0.1, ...all.map((p) => p[1]));
  const x = (t) => PAD + ((t - t0) / (t1 - t0)) * (W - 2 * PAD);
  const y = (v) => H - 6 - (v / max) * (H - 12);
  const chart = svg("svg", {
    width: W,
    height: H,
    viewBox: `0 0 ${W} ${H}`,
    preserveAspectRatio: "none",
    "aria-hidden": "true",
    focusable: "false",
  });
  chart.append(svg("line", { class: "spark-base", x1: 0, x2: W, y1: H - 5.5, y2: H - 5.5, stroke: "#e2e5ea" }));
  for (const s of series) {
    if (s.points.length < 2) continue;
    chart.append(
      svg("polyline", {
        class: `rate-line ${s.cls}`,
        points: s.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
        fill: "none",
        "stroke-width": 1.8,
        "stroke-linejoin": "round",
        "vector-effect": "non-scaling-stroke",
      }),
    );
  }
  const latest = series.map((s) => {
    const v = s.points.length ? s.points[s.points.length - 1][1] : null;
    return `${s.name} ${v === null ? "—" : `${v.toFixed(2)}${unit}`}`;
  });
  const legend = h(
    "span",
    { class: "spark-legend" },
    series.map((s, i) => h("span", {}, h("i", { class: `key ${s.cls}` }), latest[i])),
  );
  const summary = `${label}: ${latest.join(", ")}`;
  return h(
    "div",
    { class: "spark spark-wide", role: "img", "aria-label": summary, title: summary },
    chart,
    legend,
  );
}
