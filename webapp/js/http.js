// The console's only HTTP client: JSON in and out, the session's CSRF token on every
// state-changing request, and one place that notices an expired session.

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/**
 * Client-side deadlines. A stalled supervisor makes the API hang (up to its own 10 s control
 * timeout) instead of failing, so every request gives up on its own and says so.
 */
export const TIMEOUT_MS = { read: 8000, write: 40000 };

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

/** True when `err` means the supervisor (not the browser's network) is not answering. */
export function supervisorSilent(err) {
  return Boolean(err) && (err.status === 503 || err.status === 504 || err.code === "timeout");
}

/**
 * `fetch` that gives up after `ms`: an `ApiError` with code "timeout" (or "network"), never
 * a promise that hangs while the server does.
 */
export async function fetchWithin(path, init = {}, ms = TIMEOUT_MS.read) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), ms);
  try {
    return await fetch(path, { ...init, signal: ctl.signal });
  } catch (err) {
    if (ctl.signal.aborted) {
      throw new ApiError(0, "timeout", `No answer within ${Math.round(ms / 1000)} s`);
    }
    throw new ApiError(0, "network", `Cannot reach the server (${err.message || err})`);
  } finally {
    clearTimeout(timer);
  }
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
  { quiet401 = false, timeoutMs = null, text: asText = false, onResponse = null } = {},
) {
  const accept = asText ? "text/plain" : "application/json";
  const headers = csrfHeaders(method, { Accept: accept });
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (body instanceof FormData) {
    init.body = body; // multipart: the browser writes Content-Type with its boundary
  } else if (body !== undefined) {
    headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  const ms = timeoutMs ?? (method === "GET" ? TIMEOUT_MS.read : TIMEOUT_MS.write);
  const resp = await fetchWithin(path, init, ms);
  if (!resp.ok) {
    const err = await errorFrom(resp);
    if (resp.status === 401 && !quiet401) for (const fn of expiredListeners) fn(err);
    throw err;
  }
  if (onResponse) onResponse(resp);
  const text = await resp.text();
  if (asText) return text;
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError(resp.status, "bad_response", "The server sent a reply that is not JSON");
  }
}

export const get = (path, opts) => request("GET", path, undefined, opts);
export const getText = (path, opts) => request("GET", path, undefined, { ...opts, text: true });
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
