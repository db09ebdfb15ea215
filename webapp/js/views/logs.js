// Logs viewer: newest first, level filter (minimum level), paging, readable time and level;
// follow live (tail -f: the newest page polled), text search over the newest lines, and a
// download of the log as JSON lines. Which stderr lines count as errors is decided by the
// supervisor when it writes the log (toru/supervisor/logs.py), not here.

import { field, h, icon, replace, tableHead } from "../dom.js";
import { formatTime } from "../format.js";
import { get, listOf } from "../http.js";
import { pluginStore } from "../store.js";
import { showToast } from "../toast.js";
import { fetchPlugin, pluginHeader, pluginLoadError, worthRetrying } from "./details.js";

const LEVELS = ["trace", "debug", "info", "warn", "error"];
const FOLLOW_MS = 2000;
const SCAN_PAGE = 1000; // the API's largest page
const SEARCH_PAGES = 5; // search looks at the newest 5,000 lines
const DOWNLOAD_PAGES = 50; // a download holds at most the newest 50,000 lines
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

/** What a row shows (message, error, fields as key=value), lower-cased, for the search. */
const haystack = (e) => `${e.message ?? e.msg ?? ""} ${e.error ?? ""} ${extraText(e)}`.toLowerCase();

/** Newest-first entries from up to `pages` pages of SCAN_PAGE at `level`. */
async function scan(id, level, pages) {
  const out = [];
  for (let page = 0; page < pages; page += 1) {
    const q = new URLSearchParams({ page, page_size: SCAN_PAGE });
    if (level) q.set("level", level);
    const data = await get(`/api/plugins/${encodeURIComponent(id)}/logs?${q}`);
    out.push(...listOf(data, "entries"));
    if (!data?.has_more) return { entries: out, complete: true };
  }
  return { entries: out, complete: false };
}

/** Save `entries` (newest first) as a JSON-lines file, oldest line first like the log. */
function saveJsonLines(name, entries) {
  const text = entries
    .slice()
    .reverse()
    .map((e) => JSON.stringify(e))
    .join("\n");
  const body = entries.length ? `${text}\n` : "";
  const url = URL.createObjectURL(new Blob([body], { type: "application/x-ndjson" }));
  const a = h("a", { href: url, download: name, hidden: true });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
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
      e.error ? h("span", { class: "log-extra text-bad", text: `error: ${e.error}` }) : null,
      extra ? h("span", { class: "log-extra", text: extra }) : null,
    ),
  );
}

/** Render the logs viewer for `params.id`; returns the cleanup. */
export function renderLogs(container, params, shell) {
  const id = params.id;
  shell.setTitle(`${pluginStore.byId(id)?.name || id} · Logs`);
  const state = { page: 0, pageSize: 50, level: "", query: "", follow: false };
  let alive = true;
  let header = null;
  let followTimer = null;

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
  const search = h("input", {
    id: "log-search",
    type: "search",
    placeholder: "Text in the message or fields",
    autocomplete: "off",
    dataset: { testid: "log-search" },
  });
  const follow = h("input", { id: "log-follow", type: "checkbox", dataset: { testid: "log-follow" } });
  const download = h("button", { type: "button", class: "btn", dataset: { testid: "log-download" }, text: "Download" });
  const tbody = h("tbody", {});
  const status = h("p", { class: "panel-body muted", role: "status" });
  const newer = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "log-newer" }, text: "← Newer" });
  const older = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "log-older" }, text: "Older →" });
  const pageLabel = h("span", { class: "muted", "aria-live": "polite", dataset: { testid: "log-page" } });
  const searchNote = h("p", { class: "panel-body muted note", hidden: true, dataset: { testid: "log-search-note" } });
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
        field("Level", level),
        field("Page size", size),
        field("Search", search, { grow: true }),
      ),
      h(
        "div",
        { class: "toolbar" },
        h("label", { class: "toggle-wrap", for: "log-follow" }, follow, "Follow live"),
        refresh,
        download,
      ),
    ),
    status,
    searchNote,
    h("div", { class: "table-wrap" }, table),
    h("div", { class: "pager" }, newer, pageLabel, older),
  );


  /** One page of the log, or (with a search) the matches among the newest lines. */
  const fetchRows = async () => {
    if (!state.query) {
      const q = new URLSearchParams({ page: state.page, page_size: state.pageSize });
      if (state.level) q.set("level", state.level);
      const data = await get(`/api/plugins/${encodeURIComponent(id)}/logs?${q}`);
      return { entries: listOf(data, "entries"), hasMore: Boolean(data?.has_more), note: "" };
    }
    const needle = state.query.toLowerCase();
    const { entries, complete } = await scan(id, state.level, SEARCH_PAGES);
    const hits = entries.filter((e) => haystack(e).includes(needle));
    const start = state.page * state.pageSize;
    const where = complete ? `all ${entries.length} lines` : `the newest ${entries.length} lines`;
    return {
      entries: hits.slice(start, start + state.pageSize),
      hasMore: hits.length > start + state.pageSize,
      note: `${hits.length} line${hits.length === 1 ? "" : "s"} match “${state.query}” in ${where}.`,
    };
  };

  let seq = 0;
  const load = async ({ quiet = false } = {}) => {
    const mine = ++seq; // only the newest request may paint the table
    refresh.disabled = true;
    if (!quiet) {
      status.hidden = false;
      status.textContent = "Loading logs…";
    }
    try {
      const { entries, hasMore, note } = await fetchRows();
      if (!alive || mine !== seq) return;
      replace(tbody, entries.map(logRow));
      table.hidden = entries.length === 0;
      status.hidden = entries.length > 0;
      status.textContent = state.query ? "No line matches." : emptyText(state);
      searchNote.hidden = !note;
      searchNote.textContent = note;
      newer.disabled = state.page === 0;
      older.disabled = !hasMore;
      pageLabel.textContent = `Page ${state.page + 1}`;
    } catch (err) {
      if (!alive || mine !== seq) return;
      status.hidden = false;
      status.textContent = `Could not load logs: ${err.message}`;
      table.hidden = true;
    } finally {
      if (mine === seq) refresh.disabled = false;
      scheduleFollow();
    }
  };

  /** tail -f: while following, page 1 is fetched again every FOLLOW_MS. */
  function scheduleFollow() {
    clearTimeout(followTimer);
    followTimer = null;
    if (!alive || !state.follow) return;
    followTimer = setTimeout(() => {
      if (document.visibilityState === "hidden") scheduleFollow();
      else load({ quiet: true });
    }, FOLLOW_MS);
  }

  follow.addEventListener("change", () => {
    state.follow = follow.checked;
    if (state.follow) state.page = 0;
    load();
  });
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.query = search.value.trim();
      state.page = 0;
      load();
    }, 250);
  });
  download.addEventListener("click", async () => {
    download.disabled = true;
    download.textContent = "Preparing…";
    try {
      const { entries, complete } = await scan(id, state.level, DOWNLOAD_PAGES);
      const hits = state.query ? entries.filter((e) => haystack(e).includes(state.query.toLowerCase())) : entries;
      saveJsonLines(`${id}-log${state.level ? `-${state.level}` : ""}.jsonl`, hits);
      showToast(
        `${hits.length} line${hits.length === 1 ? "" : "s"} saved${complete ? "" : ` (the newest ${entries.length} of the log)`}`,
        "success",
      );
    } catch (err) {
      showToast(`Could not download the log: ${err.message}`, "error");
    } finally {
      download.disabled = false;
      download.textContent = "Download";
    }
  });
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
  refresh.addEventListener("click", () => load());
  newer.addEventListener("click", () => {
    state.page = Math.max(0, state.page - 1);
    load();
  });
  older.addEventListener("click", () => {
    state.page += 1;
    follow.checked = state.follow = false; // reading history: stop jumping to the top
    load();
  });

  replace(container, h("div", { class: "loading", role: "status", text: "Loading…" }));
  let openTimer = null;
  const open = () =>
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
        replace(container, pluginLoadError(id, err));
        if (worthRetrying(err)) openTimer = setTimeout(open, FOLLOW_MS);
      });
  open();
  // The header's state and switch follow the shared poller.
  const unsubscribe = pluginStore.subscribe((store) => {
    const p = store.byId(id);
    if (p && header) header.update(p);
  });
  return () => {
    alive = false;
    clearTimeout(followTimer);
    clearTimeout(searchTimer);
    clearTimeout(openTimer);
    unsubscribe();
  };
}
