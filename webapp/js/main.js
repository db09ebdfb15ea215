// Boot: find out who is signed in (GET /api/auth/me returns the CSRF token again after a
// reload), then run the hash router inside the shell.

import { errorPanel } from "./components.js";
import { h, replace } from "./dom.js";
import { get, onSessionExpired, post, session } from "./http.js";
import { Shell } from "./layout.js";
import { pluginStore } from "./store.js";
import { renderDetails } from "./views/details.js";
import { renderLogin } from "./views/login.js";
import { renderLogs } from "./views/logs.js";
import { renderManager } from "./views/manager.js";
import { renderAccount } from "./views/account.js";
import { renderPluginHost } from "./views/plugin_host.js";
import { renderSystem } from "./views/system.js";
import { renderTokens } from "./views/tokens.js";
import { renderUsers } from "./views/users.js";

// Bundles register themselves here (the frontend bundle contract).
window.ToruPlugins = window.ToruPlugins || {};

const DEFAULT = "/plugins";
const ROUTES = [
  [/^\/plugins$/, renderManager],
  [/^\/plugins\/([^/]+)$/, renderDetails],
  [/^\/plugins\/([^/]+)\/logs$/, renderLogs],
  [/^\/p\/([^/]+)$/, renderPluginHost],
  [/^\/users$/, renderUsers],
  [/^\/tokens$/, renderTokens],
  [/^\/account$/, renderAccount],
  [/^\/system$/, renderSystem],
];

// Remembers (not secret) that this browser signed in, so a signed-out visit goes straight to
// the login form instead of asking /api/auth/me for a 401 the console would show as an error.
const SIGNED_IN_HINT = "toru.signedIn";
const hint = {
  get: () => {
    try {
      return localStorage.getItem(SIGNED_IN_HINT) === "1";
    } catch {
      return true; // storage unavailable: ask the server
    }
  },
  set: (on) => {
    try {
      if (on) localStorage.setItem(SIGNED_IN_HINT, "1");
      else localStorage.removeItem(SIGNED_IN_HINT);
    } catch {
      // Private mode or storage disabled: the server is asked every time instead.
    }
  },
};

const root = document.getElementById("app");
let shell = null;
let cleanup = null;
let firstRender = true;

/** The route part of the hash: "#/plugins/x?y" -> "/plugins/x". */
function currentPath() {
  const hash = location.hash.replace(/^#/, "");
  return hash.startsWith("/") ? hash.split("?")[0] : "";
}

/** SPA navigation (also what `api.navigate(path)` calls). */
export function navigate(path) {
  const p = String(path).replace(/^#/, "");
  location.hash = p.startsWith("/") ? p : `/${p}`;
}

function teardownView() {
  if (!cleanup) return;
  const fn = cleanup;
  cleanup = null;
  try {
    fn();
  } catch (err) {
    console.warn("[toru] view cleanup failed", err);
  }
}

function route() {
  if (!shell) return;
  const path = currentPath();
  if (!path) {
    history.replaceState(null, "", `#${DEFAULT}`);
    return route();
  }
  teardownView();
  shell.markCurrent(path);
  for (const [pattern, view] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    const params = m[1] ? { id: decodeURIComponent(m[1]) } : {};
    cleanup = view(shell.content, params, shell, navigate) || null;
    break;
  }
  if (!cleanup) {
    shell.setTitle("Not found");
    replace(
      shell.content,
      errorPanel({
        title: "There is no page here",
        reason: `Nothing is served at #${path}.`,
        actions: [h("a", { class: "btn btn-primary", href: `#${DEFAULT}`, text: "Go to plugins" })],
      }),
    );
    cleanup = () => {};
  }
  // Move focus to the new page for keyboard and screen-reader users (not on first load).
  if (!firstRender) shell.content.focus({ preventScroll: true });
  firstRender = false;
  window.scrollTo(0, 0);
}

function showApp() {
  hint.set(true);
  root.removeAttribute("aria-busy");
  shell?.destroy();
  shell = new Shell(root, { onSignOut: signOut });
  pluginStore.start();
  firstRender = true;
  route();
}

function showLogin(note = null) {
  hint.set(false);
  teardownView();
  shell?.destroy();
  shell = null;
  pluginStore.stop();
  root.removeAttribute("aria-busy");
  renderLogin(root, { onSignedIn: showApp, note });
}

async function signOut(note = "You are signed out.") {
  try {
    await post("/api/auth/logout", {}, { quiet401: true });
  } catch {
    // Signed out either way: the server forgets the session or it was gone already.
  }
  session.user = null;
  session.csrf = null;
  showLogin(note);
}

async function boot() {
  window.addEventListener("hashchange", route);
  document.querySelector(".skip-link")?.addEventListener("click", (ev) => {
    ev.preventDefault();
    document.getElementById("main")?.focus();
  });
  onSessionExpired(() => {
    if (!shell) return;
    session.user = null;
    session.csrf = null;
    showLogin("Your session has ended. Sign in again to continue.");
  });
  if (!hint.get()) {
    showLogin();
    return;
  }
  try {
    const me = await get("/api/auth/me", { quiet401: true });
    session.user = me.user;
    session.csrf = me.csrf_token;
    showApp();
  } catch (err) {
    if (err.status === 401 || err.status === 403) showLogin();
    else showLogin(`The server did not answer as expected (${err.message}).`);
  }
}

boot();
