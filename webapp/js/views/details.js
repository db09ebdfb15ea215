// Plugin details: metadata, activity, the last crash (exit code or signal, stderr tail)
// and recent events. Tabs link to the logs viewer.

import {
  enableSwitch,
  errorPanel,
  healthDot,
  pluginIcon,
  restartButton,
  stateBadge,
  updateHealthDot,
  updateStateBadge,
} from "../components.js";
import { h, replace } from "../dom.js";
import { formatAgo, formatDuration, formatTime } from "../format.js";
import { get, listOf, session, supervisorSilent } from "../http.js";
import { binaryChanged, changeNotice } from "../pins.js";
import { crashTimes, eventReason, exitText, inTrouble, problemText } from "../reasons.js";
import { fetchStats, sparkline } from "../sparkline.js";
import { pluginStore } from "../store.js";

const POLL_MS = 3000;

function tab(href, text, current, testid) {
  const attrs = { class: "tab", href, text, dataset: { testid } };
  if (current) attrs["aria-current"] = "page";
  return h("a", attrs);
}

/** Header with icon, name, state and (admins) the switch; shared by details and logs. */
export function pluginHeader(p, active) {
  const id = encodeURIComponent(p.id);
  const badge = stateBadge(p, { dataset: { testid: "detail-state" } });
  const dot = healthDot(p, { dataset: { testid: "detail-dot" } });
  const toggle = session.user?.role === "admin" ? enableSwitch(p) : null;
  const restart = session.user?.role === "admin" ? restartButton(p, { small: false }) : null;
  const name = h("h1", { text: p.name || p.id });
  const sub = h("p", {});
  const open = h("a", { class: "btn", href: `#/p/${id}`, text: "Open plugin" });
  const el = h(
    "div",
    {},
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" }, h("a", { href: "#/plugins", text: "Plugins" }), " / ", p.name || p.id),
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        { class: "card-head" },
        pluginIcon(p),
        h("div", {}, name, sub),
      ),
      h(
        "div",
        { class: "toolbar" },
        dot,
        badge,
        toggle ? h("label", { class: "toggle-wrap" }, toggle, h("span", { class: "muted", text: "Enabled" })) : null,
        restart,
        open,
      ),
    ),
    h(
      "nav",
      { class: "tabs", "aria-label": "Plugin sections" },
      tab(`#/plugins/${id}`, "Overview", active === "overview", "tab-overview"),
      tab(`#/plugins/${id}/logs`, "Logs", active === "logs", "tab-logs"),
    ),
  );
  const update = (next) => {
    result.last = next;
    name.textContent = next.name || next.id;
    sub.textContent = [next.version ? `v${next.version}` : null, next.author ? `by ${next.author}` : null]
      .filter(Boolean)
      .join(" · ");
    sub.className = "muted";
    updateStateBadge(badge, next);
    updateHealthDot(dot, next);
    toggle?.update(next);
    restart?.update(next);
    open.hidden = !next.enabled;
  };
  const result = { el, update, last: p };
  update(p);
  return result;
}

/** Retry a page's first load while the server is silent (it may answer again), not on a 404. */
export const worthRetrying = (err) => supervisorSilent(err) || err.code === "network";

/** The panel for a plugin page whose first load failed; says when it is retrying. */
export function pluginLoadError(id, err) {
  const retrying = worthRetrying(err);
  return errorPanel({
    title: err.status === 404 ? `No plugin called “${id}”` : "Could not load this plugin",
    reason: retrying ? `${err.message}. The supervisor does not answer; retrying.` : err.message,
    actions: [h("a", { class: "btn", href: "#/plugins", text: "Back to plugins" })],
  });
}

/** A plugin's info from GET /api/plugins/:id, accepting `{plugin, events}` or a flat object. */
export async function fetchPlugin(id) {
  const data = await get(`/api/plugins/${encodeURIComponent(id)}`);
  const info = data && data.plugin ? { ...data.plugin, events: data.events ?? data.plugin.events } : data;
  info.events = listOf(info.events, "events");
  return info;
}

const uptimeText = (p) => (p.state === "running" ? formatDuration(p.uptime_seconds) : "—");

function metadataPanel(p) {
  const row = (k, v) => [h("dt", { text: k }), h("dd", {}, v ?? "—")];
  return h(
    "section",
    { class: "panel", "aria-labelledby": "meta-h" },
    h("div", { class: "panel-head" }, h("h2", { id: "meta-h", text: "Metadata" })),
    h(
      "div",
      { class: "panel-body" },
      h(
        "dl",
        { class: "kv", dataset: { testid: "metadata" } },
        row("ID", h("code", { text: p.id })),
        row("Version", p.version),
        row("Author", p.author),
        row("Route", p.route ? h("code", { text: p.route }) : null),
        row("Binary", p.binary ? h("code", { text: p.binary }) : null),
        row("Enabled", p.enabled ? "Yes" : "No"),
        row("PID", p.pid ? String(p.pid) : null),
        [h("dt", { text: "Uptime" }), h("dd", { dataset: { field: "uptime" }, text: uptimeText(p) })],
        row("Restarts", String(p.restarts ?? 0)),
        row("Consecutive failures", String(p.consecutive_failures ?? 0)),
        inTrouble(p) ? row("Problem", h("span", { class: "text-bad", text: problemText(p, p.events) })) : null,
        p.cgroup ? row("Isolation", isolationText(p.cgroup)) : null,
        ...limitRows(p.cgroup, row),
      ),
    ),
  );
}

/** Where the plugin runs: its cgroup, or process groups only and why. */
function isolationText(cgroup) {
  if (cgroup.path) return h("code", { text: cgroup.path });
  return `process group only (${cgroup.reason || "no cgroups"})`;
}

const LIMIT_NAMES = { memory_max: "Memory limit", pids_max: "Process limit", cpu_max: "CPU limit" };

/** One row per configured limit, saying plainly when it is not enforced. */
function limitRows(cgroup, row) {
  const limits = (cgroup && cgroup.limits) || {};
  return Object.entries(limits).map(([name, lim]) => {
    const text = limitValue(name, lim.value);
    const shown = lim.enforced ? text : `${text}, not enforced: ${lim.reason || "unavailable"}`;
    const attrs = { text: shown, dataset: { testid: `limit-${name}` } };
    if (!lim.enforced) attrs.class = "text-bad";
    return row(LIMIT_NAMES[name] || name, h("span", attrs));
  });
}

function limitValue(name, value) {
  if (value === "max") return "none";
  if (name === "memory_max") return `${Math.round(Number(value) / 1048576)} MiB`;
  if (name === "cpu_max") {
    const [quota, period] = String(value).split(" ").map(Number);
    return `${Math.round((quota / period) * 100) / 100} CPU`;
  }
  return String(value);
}

function activityPanel(stats, events) {
  return h(
    "section",
    { class: "panel", "aria-labelledby": "act-h" },
    h("div", { class: "panel-head" }, h("h2", { id: "act-h", text: "Activity, last 5 minutes" })),
    h(
      "div",
      { class: "panel-body" },
      sparkline(stats, { label: "Latency", wide: true, crashes: crashTimes(events) }),
      h("p", {
        class: "muted note",
        text: "Latency measured by the supervisor in 10-second buckets; red marks are restarts and crashes.",
      }),
    ),
  );
}

function crashPanel(event, p) {
  const d = event.details || {};
  // While the plugin is down, the same words as its card; afterwards, the crash's own.
  const reason = inTrouble(p) ? problemText(p, p.events) : eventReason(event);
  const tail = Array.isArray(d.stderr_tail) ? d.stderr_tail.join("\n") : d.stderr_tail || "";
  const row = (k, v) => (v === undefined || v === null ? null : [h("dt", { text: k }), h("dd", {}, v)]);
  return h(
    "section",
    { class: "panel crash", "aria-labelledby": "crash-h", dataset: { testid: "crash-details" } },
    h(
      "div",
      { class: "panel-head" },
      h("h2", { id: "crash-h", text: "Last crash" }),
      h("span", { class: "muted", text: `${formatTime(event.created_at)} (${formatAgo(event.created_at)})` }),
    ),
    h(
      "div",
      { class: "panel-body" },
      h(
        "dl",
        { class: "kv" },
        row("Reason", h("strong", { dataset: { testid: "crash-reason" }, text: reason })),
        row("Process", exitText(d) || null),
        row("Consecutive failures", d.consecutive_failures ?? null),
        row("Up for", d.uptime_seconds !== undefined ? formatDuration(d.uptime_seconds) : null),
        p.state === "backoff" && p.retry_at ? row("Restarting at", formatTime(p.retry_at)) : null,
      ),
      tail
        ? [
            h("h3", { class: "stderr-title", text: "Last stderr lines" }),
            h("pre", { class: "stderr", dataset: { testid: "crash-stderr" }, text: tail }),
          ]
        : h("p", { class: "muted stderr-none", text: "The plugin wrote nothing to stderr before it stopped." }),
    ),
  );
}

const EVENT_TONE = {
  crashed: "bad",
  failed: "bad",
  invalid: "bad",
  disabled: "warn",
  timeout: "warn",
  unhealthy: "warn",
  binary_changed: "bad",
  approved: "ok",
  started: "ok",
  restarted: "ok",
  enabled: "ok",
};

function eventSummary(e) {
  const d = e.details || {};
  const parts = d.reason || e.event_type === "crashed" ? [eventReason(e)] : [];
  for (const [k, v] of Object.entries(d)) {
    if (k === "stderr_tail" || k === "reason" || k === "signal" || k === "exit_code") continue;
    parts.push(`${k.replaceAll("_", " ")}: ${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return parts.join(" · ");
}

function eventsPanel(events) {
  return h(
    "section",
    { class: "panel", "aria-labelledby": "ev-h" },
    h("div", { class: "panel-head" }, h("h2", { id: "ev-h", text: "Recent events" })),
    events.length
      ? h(
          "ul",
          { class: "events", dataset: { testid: "events" } },
          events.map((e) =>
            h(
              "li",
              {},
              h("time", { datetime: e.created_at, title: e.created_at, text: formatTime(e.created_at) }),
              h(
                "div",
                { class: "ev-body" },
                h("span", { class: "badge", dataset: { tone: EVENT_TONE[e.event_type] || "" }, text: e.event_type }),
                " ",
                h("span", { class: "muted", text: eventSummary(e) }),
              ),
            ),
          ),
        )
      : h("div", { class: "panel-body muted", text: "No events recorded in the last 7 days." }),
  );
}

/** Render the details page for `params.id`; returns the cleanup. */
export function renderDetails(container, params, shell) {
  const id = params.id;
  shell.setTitle(pluginStore.byId(id)?.name || id);
  let header = null;
  let stats = null;
  let timer = null;
  let alive = true;
  let signature = "";
  const body = h("div", {});
  const notice = h("p", { class: "stale-note", role: "status", hidden: true, dataset: { testid: "detail-stale" } });
  replace(container, h("div", { class: "loading", role: "status", text: "Loading plugin…" }));

  const load = async () => {
    try {
      const [p, s] = await Promise.all([fetchPlugin(id), stats ? Promise.resolve(stats) : fetchStats(id)]);
      if (!alive) return;
      stats = s;
      shell.setTitle(p.name || p.id);
      if (!header) {
        header = pluginHeader(p, "overview");
        replace(container, header.el, notice, body);
      } else header.update(p);
      notice.hidden = true;
      // Re-render only on change, so selecting stderr text survives the poll.
      const { uptime_seconds: _u, ...rest } = p;
      const next = JSON.stringify([rest, stats]);
      const uptime = body.querySelector('[data-field="uptime"]');
      if (uptime) uptime.textContent = uptimeText(p);
      if (next === signature) {
        if (alive) timer = setTimeout(load, POLL_MS);
        return;
      }
      signature = next;
      const lastCrash = p.events.find((e) => e.event_type === "crashed");
      replace(
        body,
        binaryChanged(p)
          ? h("div", { class: "card-change", dataset: { testid: "binary-change" } }, ...changeNotice(p, session.user?.role === "admin"))
          : null,
        lastCrash ? crashPanel(lastCrash, p) : null,
        h("div", { class: "cols" }, metadataPanel(p), activityPanel(stats, p.events)),
        eventsPanel(p.events),
      );
    } catch (err) {
      if (!alive) return;
      if (!header) {
        replace(container, pluginLoadError(id, err));
        if (!worthRetrying(err)) return; // nothing to poll
        if (alive) timer = setTimeout(load, POLL_MS);
        return;
      }
      // Keep what is shown, but never let it pass for current.
      header.update({ ...(pluginStore.byId(id) || {}), ...header.last, stale: true });
      notice.hidden = false;
      notice.textContent = `Could not refresh (${err.message}); what is shown may be out of date. Retrying.`;
    }
    if (alive) timer = setTimeout(load, POLL_MS);
  };
  const statsTimer = setInterval(async () => {
    stats = await fetchStats(id);
  }, 10000);
  load();
  return () => {
    alive = false;
    clearTimeout(timer);
    clearInterval(statsTimer);
  };
}
