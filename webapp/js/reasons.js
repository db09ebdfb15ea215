// Why a plugin is down: one source of truth, the supervisor's newest `crashed`, `unhealthy`,
// `disabled` or `invalid` event and its `reason` (GET /api/plugins/:id returns the events).
// The card and the details page both call `problemText()`, so they cannot disagree.

const PROBLEM_EVENTS = new Set(["crashed", "unhealthy", "disabled", "invalid"]);

const capital = (s) => (s ? s[0].toUpperCase() + s.slice(1) : s);

/** How the process ended, from an event's details: "killed by SIGKILL", "exit code 1", "". */
export function exitText(d = {}) {
  if (d.signal !== undefined && d.signal !== null) {
    const name = /^\d+$/.test(String(d.signal)) ? `signal ${d.signal}` : d.signal;
    return `killed by ${name}`;
  }
  if (d.exit_code !== undefined && d.exit_code !== null) return `exit code ${d.exit_code}`;
  return "";
}

/**
 * One event's reason as a sentence: "Exited: killed by SIGKILL", "Plugin did not create
 * its socket within 5 s", "Health probe unanswered after 3 s".
 */
export function eventReason(e) {
  const d = (e && e.details) || {};
  const why = String(d.reason || "").trim();
  const how = exitText(d);
  if (e.event_type === "crashed") {
    if (!why || why === "exited") return how ? `Exited: ${how}` : "Exited";
    // The kernel's OOM killer acted in the plugin's cgroup (process.exit_reason).
    if (why === "memory limit") return `Memory limit reached: the OOM killer sent ${d.signal || "a signal"}`;
    // The supervisor stopped it (no socket, lost connection, unhealthy): the signal is its own.
    return capital(why);
  }
  return capital(why) || capital(e.event_type);
}

/** Newest first, as the API returns them; the newest problem event of each kind. */
function newest(events, type) {
  return (events || []).find((e) => e.event_type === type) || null;
}

/** True when the plugin's state calls for an explanation. */
export function inTrouble(p) {
  if (!p) return false;
  return (
    p.state === "backoff" ||
    p.state === "failed" ||
    p.state === "invalid" ||
    p.state === "changed" ||
    (p.state === "running" && (p.health === "unhealthy" || Boolean(p.upgrade_error)))
  );
}

/**
 * What is wrong with `p`, given its recent events (newest first); "" when nothing is.
 * Falls back to the list's `error` field until the events are known.
 */
export function problemText(p, events) {
  if (!inTrouble(p)) return "";
  const list = (events || []).filter((e) => PROBLEM_EVENTS.has(e.event_type));
  if (p.state === "changed") return "Binary changed since an admin approved it: not run until approved";
  if (p.state === "invalid") {
    const ev = newest(list, "invalid");
    return ev ? eventReason(ev) : capital(p.error || "Invalid plugin");
  }
  if (p.state === "running") {
    if (p.health !== "unhealthy") {
      // A replaced binary that did not take over; the old process serves on.
      return `New version not running (the previous one serves on): ${p.upgrade_error}`;
    }
    const ev = newest(list, "unhealthy");
    return ev ? eventReason(ev) : "Not answering health probes";
  }
  const crash = newest(list, "crashed");
  const cause = crash ? eventReason(crash) : capital(p.error || "");
  if (p.state === "failed") {
    const off = newest(list, "disabled");
    const head = off ? eventReason(off) : `Disabled after ${p.consecutive_failures || "too many"} consecutive failures`;
    return crash ? `${head}. Last: ${cause}` : head;
  }
  return cause || "Crashed";
}

/** Unix seconds of the crash events (the red marks of a chart). */
export function crashTimes(events) {
  return (events || [])
    .filter((e) => e.event_type === "crashed")
    .map((e) => Date.parse(e.created_at) / 1000)
    .filter(Number.isFinite);
}
