// Sign-in page. On success the CSRF token from the login response goes into the session.

import { field, h } from "../dom.js";
import { post, session } from "../http.js";

/** Render the login page into `root`; calls `onSignedIn()` after a successful login. */
export function renderLogin(root, { onSignedIn, note = null }) {
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const user = h("input", {
    id: "login-username",
    type: "text",
    name: "username",
    autocomplete: "username",
    autocapitalize: "none",
    spellcheck: "false",
    required: true,
  });
  const pass = h("input", {
    id: "login-password",
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
  });
  const submit = h("button", { type: "submit", class: "btn btn-primary", text: "Sign in" });
  const form = h(
    "form",
    { "aria-label": "Sign in", novalidate: true },
    note ? h("p", { class: "form-note", role: "status", text: note }) : null,
    error,
    field("Username", user),
    field("Password", pass),
    submit,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    if (!user.value.trim() || !pass.value) {
      error.textContent = "Enter your username and password.";
      error.hidden = false;
      (user.value.trim() ? pass : user).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = "Signing in…";
    try {
      const res = await post(
        "/api/auth/login",
        { username: user.value.trim(), password: pass.value },
        { quiet401: true },
      );
      session.user = res.user;
      session.csrf = res.csrf_token;
      onSignedIn();
    } catch (err) {
      if (err.status === 401) error.textContent = "Wrong username or password.";
      else if (err.status === 429) {
        error.textContent = err.retryAfter
          ? `Too many attempts. Try again in ${err.retryAfter} s.`
          : "Too many attempts. Wait a moment and try again.";
      } else error.textContent = `Sign-in failed: ${err.message}`;
      error.hidden = false;
      pass.select();
      pass.focus();
      submit.disabled = false;
      submit.textContent = "Sign in";
    }
  });
  root.replaceChildren(
    h(
      "main",
      { class: "login-page", id: "main", tabindex: "-1" },
      h(
        "div",
        { class: "login-card" },
        h(
          "div",
          { class: "brand" },
          h("span", { class: "brand-mark", "aria-hidden": "true", text: "T" }),
          h("div", {}, h("h1", { text: "Toru" }), h("small", { text: "Plugin host console" })),
        ),
        form,
      ),
    ),
  );
  document.title = "Sign in · Toru";
  user.focus();
}
