// Plugin frontends: load each plugin's bundle.js once (a plain script tag, so bundles need
// no module system) and give it the `api` object of the bundle contract.

import { csrfHeaders, errorFrom, fetchWithin } from "./http.js";
import { showToast } from "./toast.js";

/**
 * Why a plugin's frontend could not be shown; `stage` is "load" or "mount"; `code` is
 * "no_bundle" for an API-only plugin and "timeout" when nothing came back in time.
 */
export class BundleError extends Error {
  constructor(stage, message, code = null) {
    super(message);
    this.name = "BundleError";
    this.stage = stage;
    this.code = code;
  }
}

/** How long a view waits for its bundle before it says so (the script itself may still come). */
export const BUNDLE_TIMEOUT_MS = 10000;

const loads = new Map(); // plugin id -> Promise<registration>

export function bundleUrl(id) {
  return `/api/plugins/${encodeURIComponent(id)}/bundle.js`;
}

/** Explain a failed script load: ask the same URL again for the API's error message. */
async function loadFailure(src) {
  try {
    const resp = await fetchWithin(src, { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) {
      const err = await errorFrom(resp);
      const code = resp.status === 404 && err.code === "no_bundle" ? "no_bundle" : null;
      return new BundleError("load", `The bundle could not be loaded (HTTP ${resp.status}): ${err.message}`, code);
    }
    return new BundleError("load", "The bundle could not be executed by the browser.");
  } catch (err) {
    return new BundleError("load", `The bundle could not be loaded: ${err.message || err}`);
  }
}

/**
 * Load `id`'s bundle (once) and resolve to its `window.ToruPlugins[id]` registration.
 * A failed load is forgotten, so coming back after the plugin recovered tries again.
 */
export function loadBundle(id) {
  if (loads.has(id)) return loads.get(id);
  const src = bundleUrl(id);
  const absolute = new URL(src, location.href).href;
  const promise = new Promise((resolve, reject) => {
    let thrown = null;
    // An exception while the bundle runs reaches window "error", not the script's onerror.
    const onWindowError = (ev) => {
      if (ev.filename === absolute && !thrown) {
        thrown = ev.error || new Error(ev.message);
        ev.preventDefault();
      }
    };
    window.addEventListener("error", onWindowError);
    const script = document.createElement("script");
    script.src = src;
    script.async = true;
    script.dataset.plugin = id;
    script.addEventListener("load", () => {
      window.removeEventListener("error", onWindowError);
      if (thrown) {
        script.remove();
        reject(new BundleError("load", `The bundle threw while loading: ${describe(thrown)}`));
        return;
      }
      const reg = window.ToruPlugins?.[id];
      if (!reg || typeof reg.mount !== "function") {
        script.remove();
        reject(
          new BundleError(
            "load",
            `The bundle did not register window.ToruPlugins["${id}"] with a mount() function.`,
          ),
        );
        return;
      }
      resolve(reg);
    });
    script.addEventListener("error", async () => {
      window.removeEventListener("error", onWindowError);
      script.remove();
      reject(await loadFailure(src));
    });
    document.head.append(script);
  });
  loads.set(id, promise);
  promise.catch(() => loads.delete(id));
  return promise;
}

/**
 * `loadBundle(id)`, but give up waiting after `ms` with a BundleError of code "timeout"
 * (the load goes on, so trying again later picks up a script that arrived late).
 */
export function loadBundleWithin(id, ms = BUNDLE_TIMEOUT_MS) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new BundleError("load", `No answer within ${Math.round(ms / 1000)} s.`, "timeout")),
      ms,
    );
  });
  return Promise.race([loadBundle(id), late]).finally(() => clearTimeout(timer));
}

/** "TypeError: x is undefined" from anything thrown. */
export function describe(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  try {
    return String(err);
  } catch {
    return "unknown error";
  }
}

/**
 * The `api` handed to `mount(container, api)`: fetch scoped to the plugin's route with the
 * session cookie and the CSRF header on state-changing requests, navigate, showToast.
 */
export function pluginApi(plugin, navigate) {
  const base = `/api/plugins/route/${String(plugin.route || "").replace(/^\/+/, "")}`;
  return Object.freeze({
    pluginId: plugin.id,
    route: plugin.route,
    fetch(path = "", options = {}) {
      let p = String(path ?? "");
      if (p && !p.startsWith("/") && !p.startsWith("?")) p = `/${p}`;
      const method = options.method || "GET";
      return fetch(base + p, {
        credentials: "same-origin",
        ...options,
        headers: csrfHeaders(method, options.headers),
      });
    },
    navigate(path) {
      navigate(String(path || "/"));
    },
    showToast(message, kind = "info") {
      showToast(message, kind);
    },
  });
}
