// Logs viewer: newest first, level filter (minimum level), paging, readable time and level.

import { errorPanel } from "../components.js";
import { h, icon, replace, tableHead } from "../dom.js";
import { formatTime } from "../format.js";
import { get, listOf } from "../http.js";
import { pluginStore } from "../store.js";
import { fetchPlugin, pluginHeader } from "./details.js";

const LEVELS = ["trace", "debug", "info", "warn", "error"];
const BASE_FIELDS = new Set(["timestamp", "time", "ts", "level", "plugin", "message", "msg", "error"]);

function levelClass(level) {
  const l = String(level || "").toLowerCase();
  if (l.startsWith("err") || l === "critical" || l === "fatal") return "lvl lvl-error";
  if (l.startsWith("warn")) return "lvl lvl-warn";
  if (l === "info") return "lvl lvl-info";
  return "lvl";
}

function extraText(entry) {
  const parts = [];
  for (const [k, v] of Object.entries(entry)) {
    if (BASE_FIELDS.has(k) || v === null || v === undefined) continue;
    parts.push(`${k}=${typeof v === "object" ? JSON.stringify(v) : v}`);
  }
  return parts.join("  ");
}

function emptyText(state) {
  if (state.page > 0) return "No older entries.";
  if (state.level) return "No entries at this level or above.";
  return "This plugin has not logged anything yet.";
}

function logRow(e) {
  const ts = e.timestamp ?? e.time ?? e.ts;
  const extra = extraText(e);
  return h(
    "tr",
    { dataset: { testid: "log-row", level: String(e.level || "").toLowerCase() } },
    h("td", { class: "log-time" }, h("time", { datetime: ts, title: ts, text: formatTime(ts) })),
    h("td", { class: "nowrap" }, h("span", { class: levelClass(e.level), text: e.level || "—" })),
    h(
      "td",
      { class: "log-msg" },
      e.message ?? e.msg ?? "",
      e.error ? h("span", { class: "log-extra", style: "color:#b91c1c", text: `error: ${e.error}` }) : null,
      extra ? h("span", { class: "log-extra", text: extra }) : null,
    ),
  );
}

/** Render the logs viewer for `params.id`; returns the cleanup. */
export function renderLogs(container, params, shell) {
  const id = params.id;
  shell.setTitle(`${pluginStore.byId(id)?.name || id} · Logs`);
  const state = { page: 0, pageSize: 50, level: "" };
  let alive = true;
  let header = null;

  const level = h(
    "select",
    { id: "log-level", dataset: { testid: "log-level" } },
    h("option", { value: "", text: "All levels" }),
    LEVELS.map((l) => h("option", { value: l, text: `${l[0].toUpperCase()}${l.slice(1)} and above` })),
  );
  const size = h(
    "select",
    { id: "log-size" },
    [20, 50, 100, 200, 500].map((n) =>
      h("option", { value: n, selected: n === 50, text: `${n} per page` }),
    ),
  );
  const refresh = h("button", { type: "button", class: "btn", dataset: { testid: "log-refresh" } }, icon("refresh"), "Refresh");
  const tbody = h("tbody", {});
  const status = h("p", { class: "panel-body muted", role: "status" });
  const newer = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "log-newer" }, text: "← Newer" });
  const older = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "log-older" }, text: "Older →" });
  const pageLabel = h("span", { class: "muted", "aria-live": "polite", dataset: { testid: "log-page" } });
  const table = h(
    "table",
    { class: "log-table", dataset: { testid: "log-table" } },
    h("caption", { class: "visually-hidden", text: "Plugin log entries, newest first" }),
    tableHead(["Time"], ["Level"], ["Message"]),
    tbody,
  );
  const panel = h(
    "section",
    { class: "panel", "aria-label": "Logs" },
    h(
      "div",
      { class: "panel-head" },
      h(
        "div",
        { class: "logs-controls" },
        h("div", { class: "field" }, h("label", { for: "log-level", text: "Level" }), level),
        h("div", { class: "field" }, h("label", { for: "log-size", text: "Page size" }), size),
      ),
      refresh,
    ),
    status,
    h("div", { class: "table-wrap" }, table),
    h("div", { class: "pager" }, newer, pageLabel, older),
  );

  let seq = 0;
  const load = async () => {
    const mine = ++seq; // only the newest request may paint the table
    refresh.disabled = true;
    status.hidden = false;
    status.textContent = "Loading logs…";
    const q = new URLSearchParams({ page: state.page, page_size: state.pageSize });
    if (state.level) q.set("level", state.level);
    try {
      const data = await get(`/api/plugins/${encodeURIComponent(id)}/logs?${q}`);
      if (!alive || mine !== seq) return;
      const entries = listOf(data, "entries");
      replace(tbody, entries.map(logRow));
      table.hidden = entries.length === 0;
      status.hidden = entries.length > 0;
      status.textContent = emptyText(state);
      newer.disabled = state.page === 0;
      older.disabled = !data?.has_more;
      pageLabel.textContent = `Page ${state.page + 1}`;
    } catch (err) {
      if (!alive || mine !== seq) return;
      status.textContent = `Could not load logs: ${err.message}`;
      table.hidden = true;
    } finally {
      if (mine === seq) refresh.disabled = false;
    }
  };
  level.addEventListener("change", () => {
    state.level = level.value;
    state.page = 0;
    load();
  });
  size.addEventListener("change", () => {
    state.pageSize = Number(size.value);
    state.page = 0;
    load();
  });
  refresh.addEventListener("click", load);
  newer.addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    load();
  });
  older.addEventListener("click", () => {
    state.page += 1;
    load();
  });

  replace(container, h("div", { class: "loading", role: "status", text: "Loading…" }));
  fetchPlugin(id)
    .then((p) => {
      if (!alive) return;
      header = pluginHeader(p, "logs");
      shell.setTitle(`${p.name || p.id} · Logs`);
      replace(container, header.el, panel);
      load();
    })
    .catch((err) => {
      if (!alive) return;
      replace(
        container,
        errorPanel({
          title: err.status === 404 ? `No plugin called “${id}”` : "Could not load this plugin",
          reason: err.message,
          actions: [h("a", { class: "btn", href: "#/plugins", text: "Back to plugins" })],
        }),
      );
    });
  // The header's state and switch follow the shared poller.
  const unsubscribe = pluginStore.subscribe((store) => {
    const p = store.byId(id);
    if (p && header) header.update(p);
  });
  return () => {
    alive = false;
    unsubscribe();
  };
}
