// Plugin frontends: load each plugin's bundle.js once (a plain script tag, so bundles need
// no module system) and give it the `api` object of the bundle contract.

import { csrfHeaders, errorFrom } from "./http.js";
import { showToast } from "./toast.js";

/** Why a plugin's frontend could not be shown; `stage` is "load" or "mount". */
export class BundleError extends Error {
  constructor(stage, message) {
    super(message);
    this.name = "BundleError";
    this.stage = stage;
  }
}

const loads = new Map(); // plugin id -> Promise<registration>

export function bundleUrl(id) {
  return `/api/plugins/${encodeURIComponent(id)}/bundle.js`;
}

/** Explain a failed script load: ask the same URL again for the API's error message. */
async function loadFailureReason(src) {
  try {
    const resp = await fetch(src, { credentials: "same-origin", cache: "no-store" });
    if (!resp.ok) {
      const err = await errorFrom(resp);
      return `The bundle could not be loaded (HTTP ${resp.status}): ${err.message}`;
    }
    return "The bundle could not be executed by the browser.";
  } catch (err) {
    return `The bundle could not be loaded: ${err.message || err}`;
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
      reject(new BundleError("load", await loadFailureReason(src)));
    });
    document.head.append(script);
  });
  loads.set(id, promise);
  promise.catch(() => loads.delete(id));
  return promise;
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
