// One poller for GET /api/plugins shared by the sidebar and the plugin manager, so the
// page stays current without reloads and without each view polling on its own.

import { get, listOf } from "./http.js";

const POLL_MS = 3000;

class PluginStore {
  constructor() {
    this.plugins = [];
    this.warnings = []; // operator warnings from the X-Toru-Warnings header
    this.loaded = false;
    this.error = null;
    this.listeners = new Set();
    this.timer = null;
    this.inflight = null;
    this.running = false;
    this.onVisibility = () => {
      if (document.visibilityState === "visible" && this.running) this.refresh();
    };
  }

  /** Call `fn(store)` now (if loaded) and on every change; returns an unsubscribe. */
  subscribe(fn) {
    this.listeners.add(fn);
    if (this.loaded) fn(this);
    return () => this.listeners.delete(fn);
  }

  /** The plugin with this id, or undefined. */
  byId(id) {
    return this.plugins.find((p) => p.id === id);
  }

  /** Start polling; harmless when already started. */
  start() {
    if (this.running) return;
    this.running = true;
    document.addEventListener("visibilitychange", this.onVisibility);
    this.refresh();
  }

  /** Stop polling and forget the list (on sign-out); harmless twice. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.plugins = [];
    this.loaded = false;
  }

  /** Fetch now (coalescing concurrent calls) and reschedule the next poll. */
  refresh() {
    if (this.inflight) return this.inflight;
    clearTimeout(this.timer);
    const onResponse = (resp) => {
      this.warnings = parseWarnings(resp.headers.get("X-Toru-Warnings"));
    };
    this.inflight = get("/api/plugins", { onResponse })
      .then((data) => {
        this.plugins = listOf(data, "plugins");
        this.error = null;
      })
      .catch((err) => {
        this.error = err;
      })
      .finally(() => {
        this.inflight = null;
        if (!this.running) return;
        this.loaded = true;
        for (const fn of this.listeners) fn(this);
        if (document.visibilityState !== "hidden") {
          this.timer = setTimeout(() => this.refresh(), POLL_MS);
        }
      });
    return this.inflight;
  }

  /** Put one plugin's fresh info (from enable/disable) into the list and notify. */
  update(info) {
    if (!info || !info.id) return;
    const i = this.plugins.findIndex((p) => p.id === info.id);
    if (i >= 0) this.plugins[i] = { ...this.plugins[i], ...info };
    else this.plugins.push(info);
    for (const fn of this.listeners) fn(this);
  }
}

/** The X-Toru-Warnings header (a JSON array of {code, message}) as a list; [] when absent. */
function parseWarnings(header) {
  if (!header) return [];
  try {
    const list = JSON.parse(header);
    return Array.isArray(list) ? list.filter((w) => w && typeof w.message === "string") : [];
  } catch {
    return [];
  }
}

export const pluginStore = new PluginStore();
