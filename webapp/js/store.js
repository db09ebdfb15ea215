// One poller for GET /api/plugins shared by the sidebar and the plugin manager, so the
// page stays current without reloads and without each view polling on its own.
//
// When the supervisor does not answer (503 or no answer in time), the last list is kept but
// every plugin is marked `stale: true`: its state is unknown, and the views say so.
// For a plugin in trouble the store also fetches GET /api/plugins/:id once per change, so
// the card can show the supervisor's own reason (reasons.js), the same as the details page.

import { onFrontendLearnt, probeFrontend } from "./frontends.js";
import { get, listOf, supervisorSilent } from "./http.js";
import { inTrouble } from "./reasons.js";

const POLL_MS = 3000;

class PluginStore {
  constructor() {
    this.plugins = [];
    this.warnings = []; // operator warnings from the X-Toru-Warnings header
    this.loaded = false;
    this.error = null;
    this.stale = false; // the supervisor does not answer: states unknown
    this.staleSince = null;
    this.events = new Map(); // id -> {key, events} for plugins in trouble
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
    this.offLearnt = onFrontendLearnt(() => this.notify());
    this.refresh();
  }

  /** Stop polling and forget the list (on sign-out); harmless twice. */
  stop() {
    this.running = false;
    clearTimeout(this.timer);
    this.timer = null;
    document.removeEventListener("visibilitychange", this.onVisibility);
    this.offLearnt?.();
    this.plugins = [];
    this.events.clear();
    this.loaded = false;
  }

  notify() {
    for (const fn of this.listeners) fn(this);
  }

  /** Recent events of a plugin in trouble (newest first), or undefined until fetched. */
  eventsOf(id) {
    return this.events.get(id)?.events;
  }

  /** Fetch the details of plugins in trouble whose state changed since the last look. */
  followTrouble() {
    for (const p of this.plugins) {
      if (!inTrouble(p)) {
        this.events.delete(p.id);
        continue;
      }
      const key = [p.state, p.health, p.restarts, p.consecutive_failures, p.error].join("|");
      const seen = this.events.get(p.id);
      if (seen && seen.key === key) continue;
      this.events.set(p.id, { key, events: seen?.events });
      get(`/api/plugins/${encodeURIComponent(p.id)}`)
        .then((d) => {
          const entry = this.events.get(p.id);
          if (!entry || entry.key !== key) return;
          entry.events = listOf(d?.events, "events");
          this.notify();
        })
        .catch(() => {
          const entry = this.events.get(p.id);
          if (entry && entry.key === key) entry.key = ""; // ask again next poll
        });
    }
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
        this.stale = false;
        this.staleSince = null;
        this.followTrouble();
        for (const p of this.plugins) probeFrontend(p);
      })
      .catch((err) => {
        this.error = err;
        if (supervisorSilent(err) || err.code === "network") {
          if (!this.stale) this.staleSince = new Date();
          this.stale = true;
          this.plugins = this.plugins.map((p) => ({ ...p, stale: true }));
        }
      })
      .finally(() => {
        this.inflight = null;
        if (!this.running) return;
        this.loaded = true;
        this.notify();
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
    this.notify();
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
