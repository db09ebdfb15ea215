// The plugin manager's toolbar: search, state filter, sort, card/list view (remembered), and
// the admin's bulk enable/disable of the selected plugins.

import { field, h, replace } from "../dom.js";
import { pluginHealth } from "../format.js";
import { hasFrontend } from "../frontends.js";
import { post } from "../http.js";
import { pluginStore } from "../store.js";
import { showToast } from "../toast.js";

const VIEW_KEY = "toru.managerView";

const FILTERS = {
  all: ["All plugins", () => true],
  attention: ["Needs attention", (p) => pluginHealth(p).tone === "red"],
  running: ["Running", (p) => p.state === "running"],
  enabled: ["Enabled", (p) => p.enabled],
  disabled: ["Disabled", (p) => !p.enabled],
  api: ["API only", (p) => hasFrontend(p) === false],
};

const STATE_ORDER = ["failed", "invalid", "changed", "backoff", "starting", "running", "stopped"];

const SORTS = {
  name: ["Name", (a, b) => (a.name || a.id).localeCompare(b.name || b.id)],
  state: [
    "State (problems first)",
    (a, b) => STATE_ORDER.indexOf(a.state) - STATE_ORDER.indexOf(b.state),
  ],
  restarts: ["Most restarts", (a, b) => (b.restarts || 0) - (a.restarts || 0)],
};

function storedView() {
  try {
    return localStorage.getItem(VIEW_KEY) === "list" ? "list" : "cards";
  } catch {
    return "cards";
  }
}

function select(id, label, options, testid) {
  const el = h(
    "select",
    { id, dataset: { testid } },
    Object.entries(options).map(([value, [text]]) => h("option", { value, text })),
  );
  return [el, field(label, el)];
}

export class ManagerControls {
  /** `onChange()` re-renders the manager; it is not called from the constructor. */
  constructor(onChange) {
    this.grid = null;
    this.view = storedView();
    this.search = h("input", {
      id: "plugin-search",
      type: "search",
      placeholder: "Name, id or route",
      autocomplete: "off",
      dataset: { testid: "plugin-search" },
    });
    const [filter, filterField] = select("plugin-filter", "Show", FILTERS, "plugin-filter");
    const [sort, sortField] = select("plugin-sort", "Sort by", SORTS, "plugin-sort");
    this.filter = filter;
    this.sort = sort;
    this.viewButton = h("button", {
      type: "button",
      class: "btn btn-sm",
      dataset: { testid: "view-toggle" },
    });
    for (const el of [this.search, filter, sort]) el.addEventListener("input", () => onChange());
    this.viewButton.addEventListener("click", () => {
      this.view = this.view === "list" ? "cards" : "list";
      try {
        localStorage.setItem(VIEW_KEY, this.view);
      } catch {
        // This page only.
      }
      if (this.grid) this.applyView(this.grid);
    });
    this.el = h(
      "div",
      { class: "manager-controls", role: "search", "aria-label": "Find plugins" },
      field("Search", this.search, { grow: true }),
      filterField,
      sortField,
      this.viewButton,
    );
  }

  /** Show the grid as cards or as a compact list. */
  applyView(grid) {
    this.grid = grid;
    grid.classList.toggle("compact", this.view === "list");
    this.viewButton.textContent = this.view === "list" ? "Card view" : "Compact list";
    this.viewButton.setAttribute("aria-pressed", this.view === "list" ? "true" : "false");
  }

  /** The plugins sorted, each with whether it passes the search and the filter. */
  arrange(plugins) {
    const q = this.search.value.trim().toLowerCase();
    const keep = FILTERS[this.filter.value]?.[1] || (() => true);
    const order = SORTS[this.sort.value]?.[1] || SORTS.name[1];
    return [...plugins].sort(order).map((p) => ({
      p,
      shown:
        keep(p) &&
        (!q || [p.id, p.name, p.route, p.author].some((v) => String(v || "").toLowerCase().includes(q))),
    }));
  }
}

/**
 * "Select all shown", "Enable selected", "Disable selected". `selected()` returns the
 * checked plugins that are shown, `visibleCards()` the shown cards.
 */
export function bulkBar(selected, visibleCards) {
  const all = h("input", { type: "checkbox", id: "select-all", dataset: { testid: "select-all" } });
  const count = h("span", { class: "muted", dataset: { testid: "selected-count" } });
  const enable = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "bulk-enable" }, text: "Enable selected" });
  const disable = h("button", { type: "button", class: "btn btn-sm", dataset: { testid: "bulk-disable" }, text: "Disable selected" });
  const sync = () => {
    const n = selected().length;
    replace(count, n ? `${n} selected` : "None selected");
    enable.disabled = disable.disabled = n === 0;
    const shown = visibleCards().filter((c) => c.select);
    all.checked = shown.length > 0 && shown.every((c) => c.select.checked);
  };
  all.addEventListener("change", () => {
    for (const c of visibleCards()) if (c.select) c.select.checked = all.checked;
    sync();
  });
  const run = async (on) => {
    const targets = selected().filter((p) => p.enabled !== on && (on ? p.state !== "invalid" : true));
    enable.disabled = disable.disabled = true;
    const results = await Promise.allSettled(
      targets.map((p) => post(`/api/plugins/${encodeURIComponent(p.id)}/${on ? "enable" : "disable"}`)),
    );
    const failed = [];
    results.forEach((r, i) => {
      if (r.status === "fulfilled" && r.value?.id) pluginStore.update(r.value);
      else if (r.status === "rejected") failed.push(`${targets[i].name || targets[i].id}: ${r.reason.message}`);
    });
    const done = targets.length - failed.length;
    const verb = on ? "enabled" : "disabled";
    if (failed.length) showToast(`${done} ${verb}; failed: ${failed.join("; ")}`, "error");
    else showToast(`${done} plugin${done === 1 ? "" : "s"} ${verb}`, "success");
    pluginStore.refresh();
    sync();
  };
  enable.addEventListener("click", () => run(true));
  disable.addEventListener("click", () => run(false));
  const el = h(
    "div",
    { class: "bulk-bar", "aria-label": "Bulk actions" },
    h("label", { class: "toggle-wrap", for: "select-all" }, all, "Select all shown"),
    count,
    enable,
    disable,
  );
  return { el, sync };
}
