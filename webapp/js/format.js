// Formatting shared by every view: times, durations, plugin health.

const pad = (n) => String(n).padStart(2, "0");

/** "2026-11-25 09:31:04" in the browser's local time; "—" when missing or unparsable. */
export function formatTime(value) {
  if (value === null || value === undefined || value === "") return "—";
  const d = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  );
}

/** "5 s ago", "3 min ago" … for an ISO timestamp; empty string when unknown. */
export function formatAgo(value) {
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return "";
  const s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/** "4d 3h", "2h 5m", "3m 12s", "42s"; "—" when not running. */
export function formatDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(Number(seconds))) return "—";
  let s = Math.floor(Number(seconds));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const hrs = Math.floor(s / 3600);
  s -= hrs * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${hrs}h`;
  if (hrs) return `${hrs}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** "12.3 ms", "1.20 s". */
export function formatMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(Number(ms))) return "—";
  const v = Number(ms);
  if (v >= 1000) return `${(v / 1000).toFixed(2)} s`;
  if (v >= 100) return `${Math.round(v)} ms`;
  return `${v.toFixed(1)} ms`;
}

/**
 * The one place that decides what colour a plugin is: green = running and answering,
 * red = enabled but not serving (crashed, failed, unhealthy, invalid, changed), amber = on its
 * way up (or serving while a new binary waits for approval), grey = disabled. Returns {tone, label}.
 */
export function pluginHealth(p) {
  if (!p) return { tone: "grey", label: "Unknown" };
  if (p.stale) return { tone: "grey", label: "Unknown: the supervisor does not answer" };
  if (p.state === "invalid") return { tone: "red", label: "Invalid" };
  if (p.state === "changed") return { tone: "red", label: "Binary changed: waiting for approval" };
  if (p.state === "failed") return { tone: "red", label: "Failed" };
  if (p.state === "backoff") return { tone: "red", label: "Crashed, restarting" };
  if (p.state === "starting") return { tone: "amber", label: "Starting" };
  if (p.state === "discovering") {
    // --metadata is being read, or is retried after a timeout or crash (p.error says which)
    return { tone: "amber", label: p.error ? "Reading metadata, retrying" : "Reading metadata" };
  }
  if (p.state === "stopping") return { tone: "grey", label: "Stopping" };
  if (p.state === "running") {
    if (p.health === "unhealthy") return { tone: "red", label: "Unhealthy" };
    if (p.binary_change) return { tone: "amber", label: "Healthy; a new binary waits for approval" };
    return { tone: "green", label: "Healthy" };
  }
  if (!p.enabled) return { tone: "grey", label: "Disabled" };
  return { tone: "grey", label: p.state || "Unknown" };
}

/** Badge tone for a plugin state. */
export function stateTone(state) {
  return (
    {
      running: "ok",
      starting: "warn",
      discovering: "warn",
      stopping: "warn",
      backoff: "bad",
      failed: "bad",
      invalid: "bad",
      changed: "bad",
    }[state] || ""
  );
}

/** "Running", "Back-off" … for display. */
export function stateLabel(state) {
  return (
    {
      running: "Running",
      starting: "Starting",
      discovering: "Discovering",
      stopping: "Stopping",
      backoff: "Restarting",
      failed: "Failed",
      invalid: "Invalid",
      changed: "Changed",
      stopped: "Stopped",
    }[state] || state || "Unknown"
  );
}

/** Where a plugin's HTTP API is reached: "/api/plugins/route/hello/". */
export const apiBase = (p) => `/api/plugins/route/${String(p.route || "").replace(/^\/+/, "")}/`;
