// Plugin Manager: one card per installed plugin, kept current by the shared poller.

import {
  enableSwitch,
  healthDot,
  pluginIcon,
  setPluginIcon,
  stateBadge,
  updateHealthDot,
  updateStateBadge,
} from "../components.js";
import { h, icon, replace } from "../dom.js";
import { formatDuration, formatTime, pluginHealth } from "../format.js";
import { session } from "../http.js";
import { fetchStats, sparkline } from "../sparkline.js";
import { pluginStore } from "../store.js";

const STATS_MS = 10000; // the API's buckets are 10 s wide

/** What an operator must know at a glance; empty when nothing is wrong (or it is off). */
function cardProblem(p) {
  if (p.state === "invalid" || p.state === "failed") return p.error || "";
  if (p.state === "backoff") {
    const when = p.retry_at ? ` at ${formatTime(p.retry_at).slice(11)}` : " soon";
    return `Crashed (${p.error || "exited"}); restarting${when}.`;
  }
  if (p.state === "running" && p.health === "unhealthy") return p.error || "Not answering health probes.";
  return "";
}

class PluginCard {
  constructor(p, isAdmin) {
    const id = encodeURIComponent(p.id);
    this.dot = healthDot(p);
    this.badge = stateBadge(p, { dataset: { testid: "plugin-state" } });
    this.title = h("h2", { id: `card-title-${p.id}` });
    this.sub = h("p", { class: "card-sub" });
    this.restarts = h("dd", { dataset: { testid: "plugin-restarts" } });
    this.uptime = h("dd", { dataset: { testid: "plugin-uptime" } });
    this.pid = h("dd", {});
    this.error = h("p", { class: "card-error", hidden: true });
    this.icon = pluginIcon(p);
    this.spark = h("div", {}, sparkline(null));
    this.toggle = isAdmin ? enableSwitch(p) : null;
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
        this.icon,
        h("div", { class: "card-title" }, this.title, this.sub),
        h("span", { class: "badge-wrap" }, this.badge),
      ),
      this.error,
      h(
        "dl",
        { class: "stats" },
        h("div", {}, h("dt", { text: "Health" }), h("dd", {}, this.dot, " ", (this.healthText = h("span")))),
        h("div", {}, h("dt", { text: "Restarts" }), this.restarts),
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
    this.uptime.textContent = p.state === "running" ? formatDuration(p.uptime_seconds) : "—";
    const problem = cardProblem(p);
    this.error.hidden = !problem;
    this.error.textContent = problem;
    this.open.hidden = !p.enabled;
    if (this.toggle) {
      this.toggle.update(p);
      this.toggleText.textContent = p.enabled ? "Enabled" : "Disabled";
    }
  }

  async refreshStats() {
    const stats = await fetchStats(this.p.id);
    replace(this.spark, sparkline(stats, { label: `${this.p.name || this.p.id} latency` }));
  }
}

/** Render the manager into `container`; returns the cleanup for when the user leaves. */
export function renderManager(container, _params, shell) {
  shell.setTitle("Plugins");
  const isAdmin = session.user?.role === "admin";
  const cards = new Map();
  const grid = h("div", { class: "grid", dataset: { testid: "plugin-grid" } });
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
      h("div", { class: "toolbar" }, summary, refresh),
    ),
    warnings,
    status,
    grid,
  );

  const render = (store) => {
    const plugins = store.plugins;
    replace(
      warnings,
      ...store.warnings.map((w) =>
        h("div", { class: "alert", role: "alert", dataset: { code: w.code || "" }, text: w.message }),
      ),
    );
    status.hidden = plugins.length > 0 && !store.error;
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
    plugins.forEach((p, index) => {
      seen.add(p.id);
      let card = cards.get(p.id);
      if (!card) {
        card = new PluginCard(p, isAdmin);
        cards.set(p.id, card);
        card.refreshStats();
      } else card.update(p);
      if (grid.children[index] !== card.el) grid.insertBefore(card.el, grid.children[index] || null);
    });
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
