// The console's only HTTP client: JSON in and out, the session's CSRF token on every
// state-changing request, and one place that notices an expired session.

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** Who is signed in; `csrf` comes from the login response or `GET /api/auth/me`. */
export const session = { user: null, csrf: null };

const expiredListeners = new Set();

/** Call `fn()` when any request answers 401 (the session expired or was revoked). */
export function onSessionExpired(fn) {
  expiredListeners.add(fn);
  return () => expiredListeners.delete(fn);
}

/** An HTTP error with the API's `{"error","message"}` body when there was one. */
export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = code || "http_error";
    this.retryAfter = retryAfter;
  }
}

/** Headers for `method`: the CSRF token when the request changes state. */
export function csrfHeaders(method, headers = {}) {
  const out = new Headers(headers);
  if (UNSAFE.has(String(method || "GET").toUpperCase()) && session.csrf) {
    out.set("X-CSRF-Token", session.csrf);
  }
  return out;
}

/** Turn a non-2xx Response into an ApiError with the server's message. */
export async function errorFrom(resp) {
  let code = null;
  let message = null;
  try {
    const text = await resp.text();
    try {
      const body = JSON.parse(text);
      code = body.error || body.code || null;
      message = body.message || body.title || body.description || null;
    } catch {
      message = text.trim().slice(0, 300) || null;
    }
  } catch {
    // The body could not be read; the status alone has to do.
  }
  const retry = Number(resp.headers.get("Retry-After")) || null;
  return new ApiError(resp.status, code, message || `${resp.status} ${resp.statusText}`, retry);
}

/**
 * `request("GET", "/api/plugins")` -> parsed JSON (null for an empty body).
 * Throws ApiError; a 401 also tells the app the session is gone unless `quiet401`.
 * `onResponse(resp)` sees a successful Response first (for headers such as X-Toru-Warnings).
 */
export async function request(
  method,
  path,
  body = undefined,
  { quiet401 = false, onResponse = null } = {},
) {
  const headers = csrfHeaders(method, { Accept: "application/json" });
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `Cannot reach the server (${err.message || err})`);
  }
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401 && !quiet401) for (const fn of expiredListeners) fn(err);
    throw err;
  }
  if (onResponse) onResponse(resp);
  const text = await resp.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(resp.status, "bad_response", "The server sent a reply that is not JSON");
  }
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const post = (path, body, opts) => request("POST", path, body ?? {}, opts);
export const del = (path, opts) => request("DELETE", path, undefined, opts);
export const patch = (path, body, opts) => request("PATCH", path, body ?? {}, opts);

/** Lists may come bare or wrapped (`{"plugins": [...]}`); accept both. */
export function listOf(value, key) {
  if (Array.isArray(value)) return value;
  if (value && Array.isArray(value[key])) return value[key];
  if (value && Array.isArray(value.items)) return value.items;
  return [];
}
