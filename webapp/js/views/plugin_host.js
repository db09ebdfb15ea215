// A plugin's own view: load its bundle once, mount it, unmount it when the user leaves.
// Whatever goes wrong (plugin down, bundle throws on load or in mount) ends in an error
// panel with the reason and a link to the plugin's logs — never a broken page.

import {
  errorPanel,
  healthDot,
  pluginIcon,
  stateBadge,
  updateHealthDot,
  updateStateBadge,
} from "../components.js";
import { BundleError, describe, loadBundleWithin, pluginApi } from "../bundles.js";
import { h, replace } from "../dom.js";
import { apiBase, formatTime, stateLabel } from "../format.js";
import { hasFrontend, learnt } from "../frontends.js";
import { problemText } from "../reasons.js";
import { pluginStore } from "../store.js";

function downReason(p) {
  if (p.state === "failed" || p.state === "invalid") {
    const why = problemText(p, pluginStore.eventsOf(p.id));
    return `${p.name || p.id} is ${p.state === "failed" ? "disabled after crashing" : "not a valid plugin"}: ${why}`;
  }
  if (p.state === "changed") {
    return `${p.name || p.id} does not run: its binary changed since an administrator approved it. An administrator can review and approve it in the plugin manager.`;
  }
  if (!p.enabled) return `${p.name || p.id} is disabled. An administrator can enable it in the plugin manager.`;
  if (p.state === "backoff") {
    const when = p.retry_at ? ` Next restart attempt at ${formatTime(p.retry_at)}.` : "";
    const why = problemText(p, pluginStore.eventsOf(p.id));
    return `${p.name || p.id} crashed (${why}) and is waiting to be restarted.${when}`;
  }
  if (p.state === "starting") return `${p.name || p.id} is starting.`;
  return `${p.name || p.id} is ${stateLabel(p.state).toLowerCase()}.`;
}

/** Render plugin `params.id`'s frontend; returns the cleanup that unmounts it. */
export function renderPluginHost(container, params, shell, navigate) {
  const id = params.id;
  let alive = true;
  let mounted = null; // {reg, node}
  let attempt = 0;
  let waitingForUp = false;
  const enc = encodeURIComponent(id);

  const dot = healthDot(pluginStore.byId(id), { dataset: { testid: "view-dot" } });
  const badge = stateBadge(pluginStore.byId(id) || {}, { dataset: { testid: "view-state" } });
  const title = h("h1", {});
  const iconSlot = h("span", {});
  const sub = h("p", { class: "muted", dataset: { testid: "view-sub" } });
  const banner = h("p", { class: "card-error", role: "status", hidden: true, dataset: { testid: "view-banner" } });
  const frame = h("div", { class: "plugin-frame" });
  replace(
    container,
    h(
      "div",
      { class: "page-head" },
      h("div", { class: "card-head" }, iconSlot, h("div", {}, title, sub)),
      h(
        "div",
        { class: "toolbar" },
        dot,
        badge,
        h("a", { class: "btn btn-sm", href: `#/plugins/${enc}`, text: "Details" }),
        h("a", { class: "btn btn-sm", href: `#/plugins/${enc}/logs`, text: "Logs" }),
      ),
    ),
    banner,
    frame,
  );

  const showError = (heading, reason) => {
    unmount();
    replace(
      frame,
      errorPanel({
        title: heading,
        reason,
        testid: "plugin-error",
        actions: [
          h("a", { class: "btn btn-primary", href: `#/plugins/${enc}/logs`, dataset: { testid: "error-logs-link" }, text: "View logs" }),
          h("a", { class: "btn", href: `#/plugins/${enc}`, text: "Details" }),
          h("button", { type: "button", class: "btn", text: "Try again", onclick: () => start() }),
        ],
      }),
    );
  };

  /** An API-only plugin is not an error: say where its API is instead. */
  const showApiOnly = (p) => {
    unmount();
    replace(
      frame,
      h(
        "section",
        { class: "panel info-panel", dataset: { testid: "plugin-api-only-view" } },
        h("div", { class: "panel-head" }, h("h2", { text: `${p.name || p.id} has no web view` })),
        h(
          "div",
          { class: "panel-body" },
          h("p", {}, "It serves an HTTP API only, under ", h("code", { text: `${apiBase(p)}…` }), "."),
          h("a", { class: "btn", href: `#/plugins/${enc}`, text: "Details" }),
        ),
      ),
    );
  };

  const unmount = () => {
    if (!mounted) return;
    const { reg, node } = mounted;
    mounted = null;
    try {
      reg.unmount?.(node);
    } catch (err) {
      console.warn(`[toru] ${id}: unmount() threw`, err);
    }
    node.remove();
  };

  const start = async () => {
    const run = ++attempt;
    unmount();
    const p = pluginStore.byId(id);
    if (!p) {
      showError(`No plugin called “${id}”`, "It is not installed in this Toru home (any more).");
      return;
    }
    if (p.state !== "running" || !p.enabled) {
      waitingForUp = p.enabled && (p.state === "backoff" || p.state === "starting");
      showError(
        `${p.name || p.id} is not available`,
        downReason(p) + (waitingForUp ? " This page will load it as soon as it is back." : ""),
      );
      return;
    }
    waitingForUp = false;
    if (hasFrontend(p) === false) {
      showApiOnly(p);
      return;
    }
    replace(frame, h("div", { class: "loading", role: "status", text: `Loading ${p.name || p.id}…` }));
    let reg;
    try {
      reg = await loadBundleWithin(id);
    } catch (err) {
      if (!alive || run !== attempt) return;
      if (err instanceof BundleError && err.code === "no_bundle") {
        learnt(p, false);
        showApiOnly(p);
      } else if (err instanceof BundleError && err.code === "timeout") {
        const who = pluginStore.stale ? "The supervisor does not answer" : "Neither the plugin nor the supervisor answered";
        showError(
          `${p.name || p.id} did not load`,
          `${who}: ${err.message} This page loads the view as soon as the supervisor answers again.`,
        );
        waitingForUp = true;
      } else {
        showError(`${p.name || p.id} could not be loaded`, err instanceof BundleError ? err.message : describe(err));
      }
      return;
    }
    learnt(p, true);
    if (!alive || run !== attempt) return;
    const node = h("div", { class: "plugin-container", dataset: { testid: "plugin-container", plugin: id } });
    replace(frame, node);
    mounted = { reg, node };
    try {
      const result = reg.mount(node, pluginApi(p, navigate));
      if (result && typeof result.then === "function") await result;
    } catch (err) {
      if (!alive || run !== attempt) return;
      console.warn(`[toru] ${id}: mount() threw`, err);
      mounted = null; // a failed mount is not unmounted
      showError(`${p.name || p.id} failed to start its view`, `mount() threw: ${describe(err)}`);
    }
  };

  const unsubscribe = pluginStore.subscribe((store) => {
    const p = store.byId(id);
    if (!p) return;
    title.textContent = p.name || p.id;
    shell.setTitle(p.name || p.id);
    replace(iconSlot, pluginIcon(p));
    sub.textContent = [p.version ? `v${p.version}` : null, p.route].filter(Boolean).join(" · ");
    updateHealthDot(dot, p);
    updateStateBadge(badge, p);
    const down = p.state !== "running" || !p.enabled || p.stale;
    banner.hidden = !(mounted && down);
    if (mounted && down) {
      banner.textContent = p.stale
        ? "The supervisor does not answer; what you see may be out of date."
        : `${downReason(p)} What you see may be out of date.`;
    }
    if (waitingForUp && p.enabled && p.state === "running" && !p.stale) start();
  });
  shell.setTitle(pluginStore.byId(id)?.name || id);
  if (pluginStore.loaded) start();
  else {
    const once = pluginStore.subscribe(() => {
      once();
      if (alive && !attempt) start();
    });
  }
  return () => {
    alive = false;
    unsubscribe();
    unmount();
  };
}
