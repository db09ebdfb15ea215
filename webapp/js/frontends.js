// Which plugins have a web view. The metadata does not say, so the console learns it once
// per plugin version from GET /api/plugins/:id/bundle.js: 200 = a view, 404 `no_bundle` =
// API only. Anything else (plugin down, supervisor silent) leaves it unknown, asked again later.

import { bundleUrl } from "./bundles.js";
import { errorFrom, fetchWithin } from "./http.js";

const KEY = "toru.frontend.";
const RETRY_MS = 15000;

const known = new Map(); // "id@version" -> true | false
const asking = new Map(); // "id@version" -> time of the last attempt
const listeners = new Set();

const keyOf = (p) => `${p.id}@${p.version || ""}`;

function remembered(key) {
  if (known.has(key)) return known.get(key);
  try {
    const v = localStorage.getItem(KEY + key);
    if (v === "1" || v === "0") {
      known.set(key, v === "1");
      return v === "1";
    }
  } catch {
    // No storage: learn it again on every load.
  }
  return undefined;
}

function remember(key, value) {
  known.set(key, value);
  try {
    localStorage.setItem(KEY + key, value ? "1" : "0");
  } catch {
    // Kept in memory only.
  }
  for (const fn of listeners) fn();
}

/** true (has a view), false (API only) or undefined (not known yet). */
export function hasFrontend(p) {
  return p && p.id ? remembered(keyOf(p)) : undefined;
}

/** Call `fn()` whenever something new was learnt; returns an unsubscribe. */
export function onFrontendLearnt(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

/** Record what a real bundle load found out (the plugin view learns it too). */
export function learnt(p, value) {
  if (p && p.id && remembered(keyOf(p)) !== value) remember(keyOf(p), value);
}

/** Ask once for a running plugin whose answer is not known; harmless to call every poll. */
export async function probeFrontend(p) {
  const key = keyOf(p);
  if (!p.enabled || p.state !== "running" || p.stale || remembered(key) !== undefined) return;
  const last = asking.get(key);
  if (last !== undefined && (last === Infinity || Date.now() - last < RETRY_MS)) return;
  asking.set(key, Infinity); // in flight
  try {
    const resp = await fetchWithin(bundleUrl(p.id), { credentials: "same-origin", cache: "no-store" });
    if (resp.ok) remember(key, true);
    else if (resp.status === 404 && (await errorFrom(resp)).code === "no_bundle") remember(key, false);
  } catch {
    // Unknown for now; asked again after RETRY_MS.
  } finally {
    asking.set(key, Date.now());
  }
}
