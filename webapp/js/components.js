// Pieces several views share: health dot, state badge, the admin enable switch and restart
// button, the error panel.

import { h } from "./dom.js";
import { pluginHealth, stateLabel, stateTone } from "./format.js";
import { post } from "./http.js";
import { pluginStore } from "./store.js";
import { showToast } from "./toast.js";

/** A coloured dot with an accessible label; `data-health` is green/red/amber/grey. */
export function healthDot(p, extra = {}) {
  const el = h("span", { class: "dot", role: "img", ...extra });
  updateHealthDot(el, p);
  return el;
}

export function updateHealthDot(el, p) {
  const { tone, label } = pluginHealth(p);
  el.dataset.health = tone;
  el.setAttribute("aria-label", label);
  el.title = label;
}

/** "Running" badge coloured by state. */
export function stateBadge(p, extra = {}) {
  const el = h("span", { class: "badge", ...extra });
  updateStateBadge(el, p);
  return el;
}

export function updateStateBadge(el, p) {
  if (p.stale) {
    // The last known state is only a hint: say it is unknown, grey.
    el.dataset.tone = "";
    el.dataset.state = "unknown";
    el.textContent = "Unknown";
    el.title = `Last known: ${stateLabel(p.state)}`;
    return;
  }
  el.dataset.tone = stateTone(p.state);
  el.dataset.state = p.state || "";
  el.textContent = stateLabel(p.state);
  el.removeAttribute("title");
}

/**
 * The admin's enable/disable switch for plugin `p`; confirms with a toast, explains errors
 * with one. Call `.update(p)` to follow the store without losing keyboard focus.
 */
export function enableSwitch(p) {
  let current = p;
  const button = h("button", {
    type: "button",
    class: "switch",
    role: "switch",
    dataset: { testid: `toggle-${p.id}` },
  });
  const update = (next) => {
    current = next;
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-checked", next.enabled ? "true" : "false");
    button.setAttribute("aria-label", `${next.name || next.id} enabled`);
    button.disabled = next.state === "invalid" && !next.enabled;
  };
  button.addEventListener("click", async () => {
    if (button.getAttribute("aria-busy") === "true") return;
    const enable = !current.enabled;
    const name = current.name || current.id;
    button.setAttribute("aria-busy", "true");
    button.setAttribute("aria-checked", enable ? "true" : "false");
    try {
      const info = await post(
        `/api/plugins/${encodeURIComponent(current.id)}/${enable ? "enable" : "disable"}`,
      );
      const fresh = info && info.id ? info : { ...current, enabled: enable };
      pluginStore.update(fresh);
      current = { ...current, ...fresh };
      showToast(`${name} ${enable ? "enabled" : "disabled"}`, "success");
    } catch (err) {
      showToast(`Could not ${enable ? "enable" : "disable"} ${name}: ${err.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
      update(current);
      pluginStore.refresh();
    }
  });
  update(p);
  button.update = update;
  return button;
}

/**
 * The admin's Restart button for plugin `p` (POST /api/plugins/:id/restart): graceful, the
 * new process takes over once healthy and no request is lost. Shown while the plugin is
 * enabled and its binary is the approved one; busy while the restart runs. `.update(p)`
 * follows the store.
 */
export function restartButton(p, { small = true } = {}) {
  let current = p;
  const button = h("button", {
    type: "button",
    class: small ? "btn btn-sm" : "btn",
    text: "Restart",
    dataset: { testid: `restart-${p.id}` },
  });
  const update = (next) => {
    current = next;
    // Not offered where it cannot act: a changed binary waits for Approve (409 otherwise).
    button.hidden = !next.enabled || next.state === "invalid" || next.state === "changed" || Boolean(next.binary_change);
    button.setAttribute("aria-label", `Restart ${next.name || next.id}`);
  };
  button.addEventListener("click", async () => {
    if (button.getAttribute("aria-busy") === "true") return;
    const name = current.name || current.id;
    button.setAttribute("aria-busy", "true");
    button.disabled = true;
    try {
      const info = await post(`/api/plugins/${encodeURIComponent(current.id)}/restart`);
      if (info && info.id) pluginStore.update(info);
      showToast(`${name} restarted${info?.pid ? ` (pid ${info.pid})` : ""}`, "success");
    } catch (err) {
      showToast(`Could not restart ${name}: ${err.message}`, "error");
    } finally {
      button.removeAttribute("aria-busy");
      button.disabled = false;
      pluginStore.refresh();
    }
  });
  update(p);
  button.update = update;
  return button;
}

/** A calm, explicit failure: what went wrong, why, and where to look next. */
export function errorPanel({ title, reason, actions = [], testid = "error-panel" }) {
  return h(
    "section",
    { class: "error-panel", role: "alert", dataset: { testid } },
    h("span", { class: "err-icon", "aria-hidden": "true", text: "!" }),
    h(
      "div",
      { class: "err-body" },
      h("h2", { text: title }),
      reason ? h("p", { class: "reason", dataset: { testid: "error-reason" }, text: reason }) : null,
      actions.length ? h("div", { class: "actions" }, actions) : null,
    ),
  );
}

const glyphCache = new Map();
const LETTER_COLORS = ["#0f766e", "#1d4ed8", "#7c3aed", "#b45309", "#be123c", "#0e7490", "#4d7c0f"];

/**
 * Whether this browser can draw `text` (servers and kiosks often lack an emoji font, and a
 * missing glyph shows as an empty box). Colour pixels mean an emoji font drew it; otherwise
 * it must at least differ from a glyph no font has.
 */
function glyphRenders(text) {
  if (!/[^\u0000-\u007f]/.test(text)) return true;
  if (glyphCache.has(text)) return glyphCache.get(text);
  let ok = true;
  try {
    const draw = (t) => {
      const c = document.createElement("canvas");
      c.width = 28;
      c.height = 28;
      const ctx = c.getContext("2d", { willReadFrequently: true });
      ctx.fillStyle = "#000";
      ctx.textBaseline = "top";
      ctx.font = "22px sans-serif";
      ctx.fillText(t, 2, 2);
      return ctx.getImageData(0, 0, 28, 28).data;
    };
    const d = draw(text);
    let colour = false;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i + 3] && (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2])) {
        colour = true;
        break;
      }
    }
    if (!colour) {
      const missing = draw("\u{10FFFD}");
      ok = d.some((v, i) => v !== missing[i]);
    }
  } catch {
    ok = true;
  }
  glyphCache.set(text, ok);
  return ok;
}

/** Show `p`'s icon in `el`: its emoji when the browser can draw it, else a letter tile. */
export function setPluginIcon(el, p) {
  const icon = p.icon ? String(p.icon).slice(0, 8) : "";
  if (icon && glyphRenders(icon)) {
    el.textContent = icon;
    el.classList.remove("icon-letter");
    el.style.removeProperty("--tile");
    return;
  }
  const name = String(p.name || p.id || "?");
  let hash = 0;
  for (const ch of String(p.id || name)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
  el.textContent = name.trim().charAt(0).toUpperCase() || "?";
  el.classList.add("icon-letter");
  el.style.setProperty("--tile", LETTER_COLORS[hash % LETTER_COLORS.length]);
}

/** Icon from metadata (usually an emoji), with a letter tile when it cannot be drawn. */
export function pluginIcon(p, cls = "plugin-icon") {
  const el = h("span", { class: cls, "aria-hidden": "true" });
  setPluginIcon(el, p);
  return el;
}
