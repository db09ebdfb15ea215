// Reads the counters the system page charts from GET /metrics (Prometheus text format).

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** [{name, labels, value}] for every sample line. */
export function parseMetrics(text) {
  const out = [];
  for (const line of String(text).split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const m = LINE.exec(line);
    if (!m) continue;
    const labels = {};
    for (const [, k, v] of (m[2] || "").matchAll(LABEL)) labels[k] = v;
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

/**
 * Totals since the processes started: API requests and plugin-route requests, and how
 * many of them were server errors (5xx).
 */
export function requestTotals(samples) {
  let requests = 0;
  let errors = 0;
  for (const s of samples) {
    if (!Number.isFinite(s.value)) continue;
    if (s.name === "toru_http_requests_total") {
      requests += s.value;
      if (String(s.labels.status || "").startsWith("5")) errors += s.value;
    } else if (s.name === "toru_proxy_request_duration_seconds_count") {
      requests += s.value;
      if (String(s.labels.code_class || "").startsWith("5")) errors += s.value;
    }
  }
  return { requests, errors };
}
