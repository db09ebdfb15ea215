// Plugin Manager: one card per installed plugin, kept current by the shared poller.

import {
  enableSwitch,
  healthDot,
  pluginIcon,
  restartButton,
  setPluginIcon,
  stateBadge,
  updateHealthDot,
  updateStateBadge,
} from "../components.js";
import { h, icon, replace } from "../dom.js";
import { apiBase, formatDuration, formatTime, pluginHealth } from "../format.js";
import { hasFrontend } from "../frontends.js";
import { session } from "../http.js";
import { binaryChanged, changeNotice, installControl } from "../pins.js";
import { crashTimes, problemText } from "../reasons.js";
import { rescanButton } from "../rescan.js";
import { fetchStats, sparkline } from "../sparkline.js";
import { pluginStore } from "../store.js";
import { bulkBar, ManagerControls } from "./manager_controls.js";

const STATS_MS = 10000; // the API's buckets are 10 s wide



/**
 * How to retry an invalid plugin: fix the file (the supervisor picks a changed binary up by
 * itself within seconds) or, for admins, rescan now (POST /api/plugins/rescan).
 */
function invalidHint(p, isAdmin) {
  return [
    "To retry, fix or replace ",
    h("code", { text: `plugins/${p.binary || `${p.id}.binary`}` }),
    isAdmin ? ", then Retry (or wait: the supervisor picks up a changed file within seconds). " : ": the supervisor picks up the changed file within seconds.",
    isAdmin ? rescanButton({ label: "Retry", testid: `retry-${p.id}` }) : null,
  ];
}

class PluginCard {
  constructor(p, isAdmin) {
    this.isAdmin = isAdmin;
    const id = encodeURIComponent(p.id);
    this.dot = healthDot(p);
    this.badge = stateBadge(p, { dataset: { testid: "plugin-state" } });
    this.title = h("h2", { id: `card-title-${p.id}` });
    this.sub = h("p", { class: "card-sub" });
    this.restarts = h("dd", { dataset: { testid: "plugin-restarts" } });
    this.failures = h("dd", { dataset: { testid: "plugin-failures" } });
    this.uptime = h("dd", { dataset: { testid: "plugin-uptime" } });
    this.pid = h("dd", {});
    this.error = h("p", { class: "card-error", hidden: true, dataset: { testid: "plugin-problem" } });
    this.apiOnly = h("p", { class: "card-api", hidden: true, dataset: { testid: "plugin-api-only" } });
    this.invalidHint = h("p", { class: "card-api", hidden: true, dataset: { testid: "invalid-hint" } });
    this.change = h("div", { class: "card-change", hidden: true, dataset: { testid: "binary-change" } });
    this.select = isAdmin
      ? h("input", {
          type: "checkbox",
          class: "card-select",
          "aria-label": `Select ${p.name || p.id}`,
          dataset: { testid: `select-${p.id}` },
        })
      : null;
    this.icon = pluginIcon(p);
    this.spark = h("div", {}, sparkline(null));
    this.toggle = isAdmin ? enableSwitch(p) : null;
    this.restart = isAdmin ? restartButton(p) : null;
    this.open = h("a", { class: "btn btn-sm", href: `#/p/${id}`, text: "Open" });
    this.el = h(
      "article",
      {
        class: "card",
        "aria-labelledby": `card-title-${p.id}`,
        dataset: { testid: `plugin-card-${p.id}` },
      },
      h(
        "div",
        { class: "card-head" },
        this.select,
        this.icon,
        h("div", { class: "card-title" }, this.title, this.sub),
        h("span", { class: "badge-wrap" }, this.badge),
      ),
      this.error,
      this.change,
      this.invalidHint,
      this.apiOnly,
      h(
        "dl",
        { class: "stats" },
        h("div", {}, h("dt", { text: "Health" }), h("dd", {}, this.dot, " ", (this.healthText = h("span")))),
        h("div", {}, h("dt", { text: "Restarts" }), this.restarts),
        h("div", {}, h("dt", { text: "Failures" }), this.failures),
        h("div", {}, h("dt", { text: "Uptime" }), this.uptime),
      ),
      this.spark,
      h(
        "div",
        { class: "card-foot" },
        this.toggle
          ? h(
              "label",
              { class: "toggle-wrap" },
              this.toggle,
              (this.toggleText = h("span", { class: "muted" })),
            )
          : null,
        h("span", { class: "spacer" }),
        this.restart,
        this.open,
        h("a", { class: "btn btn-sm btn-link", href: `#/plugins/${id}`, text: "Details" }),
        h("a", { class: "btn btn-sm btn-link", href: `#/plugins/${id}/logs`, text: "Logs" }),
      ),
    );
    this.update(p);
  }

  update(p) {
    this.p = p;
    this.title.textContent = p.name || p.id;
    const bits = [p.version ? `v${p.version}` : null, p.author ? `by ${p.author}` : null, p.route];
    this.sub.textContent = bits.filter(Boolean).join(" · ");
    setPluginIcon(this.icon, p);
    updateStateBadge(this.badge, p);
    updateHealthDot(this.dot, p);
    this.healthText.textContent = this.dot.title;
    this.restarts.textContent = String(p.restarts ?? 0);
    const failures = Number(p.consecutive_failures || 0);
    this.failures.textContent = String(failures);
    // Red while they matter: the plugin is meant to run, or gave up because of them.
    this.failures.classList.toggle("text-bad", failures > 0 && (p.enabled || p.state === "failed"));
    this.uptime.textContent = p.state === "running" && !p.stale ? formatDuration(p.uptime_seconds) : "—";
    // The supervisor's reason, exactly as the details page words it (reasons.js).
    const problem = p.stale ? "" : problemText(p, pluginStore.eventsOf(p.id));
    this.error.hidden = !problem;
    replace(
      this.error,
      h("span", { dataset: { testid: "problem-reason" }, text: problem }),
      p.state === "backoff" && p.retry_at ? ` · restarting at ${formatTime(p.retry_at).slice(11)}` : null,
    );
    this.invalidHint.hidden = p.state !== "invalid" || p.stale;
    // Built once per invalid spell: rebuilding on every poll would drop a click in flight.
    if (p.state === "invalid" && !this.invalidHint.firstChild) replace(this.invalidHint, invalidHint(p, this.isAdmin));
    if (p.state !== "invalid") replace(this.invalidHint);
    this.change.hidden = !binaryChanged(p);
    // Rebuilt only when the hashes or the state change: a poll must not drop a click in flight.
    const changeKey = binaryChanged(p) ? `${p.state}|${JSON.stringify(p.binary_change)}` : "";
    if (changeKey !== this.changeKey) {
      this.changeKey = changeKey;
      replace(this.change, ...(changeKey ? changeNotice(p, this.isAdmin) : []));
    }
    const apiOnly = hasFrontend(p) === false;
    this.apiOnly.hidden = !apiOnly || !p.route;
    if (apiOnly && p.route) {
      replace(this.apiOnly, "API only, no web view: ", h("code", { text: `${apiBase(p)}…` }));
    }
    this.el.dataset.stale = p.stale ? "true" : "false";
    this.open.hidden = !p.enabled || apiOnly || p.state === "changed";
    this.restart?.update(p);
    if (this.toggle) {
      this.toggle.update(p);
      this.toggleText.textContent = p.enabled ? "Enabled" : "Disabled";
    }
  }

  async refreshStats() {
    this.stats = await fetchStats(this.p.id);
    this.drawSpark();
  }

  drawSpark() {
    const crashes = crashTimes(pluginStore.eventsOf(this.p.id));
    const key = `${JSON.stringify(this.stats)}|${crashes.join()}`;
    if (key === this.sparkKey) return;
    this.sparkKey = key;
    const label = `${this.p.name || this.p.id} latency`;
    replace(this.spark, sparkline(this.stats, { label, crashes }));
  }
}

/** Render the manager into `container`; returns the cleanup for when the user leaves. */
export function renderManager(container, _params, shell) {
  shell.setTitle("Plugins");
  const isAdmin = session.user?.role === "admin";
  const cards = new Map();
  const grid = h("div", { class: "grid", dataset: { testid: "plugin-grid" } });
  const controls = new ManagerControls(() => render(pluginStore));
  controls.applyView(grid);
  const noMatch = h("p", { class: "muted", hidden: true, dataset: { testid: "no-match" }, text: "No plugin matches." });
  const selected = () => [...cards.values()].filter((c) => c.select?.checked && !c.el.hidden).map((c) => c.p);
  const bulk = isAdmin ? bulkBar(selected, () => [...cards.values()].filter((c) => !c.el.hidden)) : null;
  const summary = h("div", { class: "summary", "aria-live": "polite" });
  const status = h("div", { class: "loading", role: "status", text: "Loading plugins…" });
  const warnings = h("div", { class: "warnings", dataset: { testid: "warnings" } });
  const refresh = h(
    "button",
    {
      type: "button",
      class: "btn btn-sm",
      onclick: () => {
        pluginStore.refresh();
        for (const c of cards.values()) c.refreshStats();
      },
    },
    icon("refresh"),
    "Refresh",
  );
  replace(
    container,
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        {},
        h("h1", { text: "Plugins" }),
        h("p", {
          text: isAdmin
            ? "Every plugin installed in this Toru home. New plugins start disabled until you enable them."
            : "Every plugin installed in this Toru home.",
        }),
      ),
      h(
        "div",
        { class: "toolbar" },
        summary,
        isAdmin ? installControl() : null,
        isAdmin ? rescanButton() : null,
        refresh,
      ),
    ),
    warnings,
    controls.el,
    bulk?.el,
    status,
    grid,
    noMatch,
  );

  const render = (store) => {
    const plugins = store.plugins;
    replace(
      warnings,
      ...store.warnings.map((w) =>
        h("div", { class: "alert", role: "alert", dataset: { code: w.code || "" }, text: w.message }),
      ),
    );
    status.hidden = plugins.length > 0; // a silent supervisor is the shell's banner
    if (store.error && !plugins.length) {
      status.textContent = `Could not load plugins: ${store.error.message}`;
      status.setAttribute("role", "alert");
    } else if (!plugins.length) {
      replace(
        status,
        h(
          "div",
          { class: "empty" },
          h("h2", { text: "No plugins installed" }),
          h(
            "p",
            {},
            "Copy plugin executables named ",
            h("code", { text: "*.binary" }),
            " into the home's ",
            h("code", { text: "plugins/" }),
            " directory.",
          ),
        ),
      );
      status.removeAttribute("role");
    }
    const seen = new Set();
    controls.arrange(plugins).forEach(({ p, shown }, index) => {
      seen.add(p.id);
      let card = cards.get(p.id);
      if (!card) {
        card = new PluginCard(p, isAdmin);
        card.select?.addEventListener("change", () => bulk?.sync());
        cards.set(p.id, card);
        card.refreshStats();
      } else {
        card.update(p);
        if (card.stats) card.drawSpark();
      }
      card.el.hidden = !shown;
      if (grid.children[index] !== card.el) grid.insertBefore(card.el, grid.children[index] || null);
    });
    noMatch.hidden = !plugins.length || [...cards.values()].some((c) => !c.el.hidden);
    bulk?.sync();
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        card.el.remove();
        cards.delete(id);
      }
    }
    const running = plugins.filter((p) => p.state === "running").length;
    const enabled = plugins.filter((p) => p.enabled).length;
    const attention = plugins.filter((p) => pluginHealth(p).tone === "red").length;
    replace(
      summary,
      h("span", { class: "badge", text: `${plugins.length} installed` }),
      h("span", { class: "badge", dataset: { tone: "ok" }, text: `${running} running` }),
      enabled > running ? h("span", { class: "badge", text: `${enabled} enabled` }) : null,
      attention
        ? h("span", {
            class: "badge",
            dataset: { tone: "bad", testid: "attention" },
            text: `${attention} need${attention === 1 ? "s" : ""} attention`,
          })
        : null,
    );
  };
  const unsubscribe = pluginStore.subscribe(render);
  pluginStore.refresh();
  const statsTimer = setInterval(() => {
    if (document.visibilityState === "hidden") return;
    for (const c of cards.values()) c.refreshStats();
  }, STATS_MS);
  return () => {
    unsubscribe();
    clearInterval(statsTimer);
  };
}
