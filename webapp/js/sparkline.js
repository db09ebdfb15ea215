// A small inline SVG of recent latency (p50, p99) and restarts from GET /api/plugins/:id/stats
// — operators would rather look than read.

import { h, svg } from "./dom.js";
import { formatMs } from "./format.js";
import { get } from "./http.js";

const PAD = 2;

const toSeconds = (t) => (typeof t === "number" ? t : Date.parse(t) / 1000);

/** Render a sparkline element for a stats result (or null while loading). */
export function sparkline(stats, { label = "Recent latency", wide = false } = {}) {
  // The wide variant stretches to its panel (non-scaling strokes keep lines crisp).
  const W = wide ? 480 : 132;
  const H = wide ? 96 : 34;
  const latency = (stats?.latency || []).filter((b) => b && b.count > 0);
  const restarts = (stats?.restarts || []).filter((b) => b && b.count > 0);
  const times = [...(stats?.latency || []), ...(stats?.restarts || [])]
    .map((b) => toSeconds(b.t))
    .filter((t) => Number.isFinite(t));
  const lo = times.length ? Math.min(...times) : 0;
  const hi = times.length ? Math.max(...times) : 1;
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
  for (const r of restarts) {
    const rx = x(r.t).toFixed(1);
    chart.append(
      svg("line", {
        x1: rx,
        x2: rx,
        y1: 2,
        y2: H - 3,
        stroke: "#dc2626",
        "stroke-width": 1.5,
        "vector-effect": "non-scaling-stroke",
      }),
    );
  }

  const last = latency[latency.length - 1];
  const restartCount = restarts.reduce((n, r) => n + Number(r.count || 0), 0);
  const restartText = `${restartCount} restart${restartCount === 1 ? "" : "s"}`;
  const legend = h("span", { class: "spark-legend" });
  if (!stats) {
    legend.append(h("span", { text: "Loading activity…" }));
  } else if (!last && !restartCount) {
    legend.append(h("span", { text: "No recent requests" }));
  } else {
    if (last) {
      legend.append(
        h("span", {}, h("i", { class: "key key-p50" }), `p50 ${formatMs(last.p50_ms)}`),
        h("span", {}, h("i", { class: "key key-p99" }), `p99 ${formatMs(last.p99_ms)}`),
      );
    }
    if (restartCount) {
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
