// The signed-in user's own account: who they are and a new password for any user
// (POST /api/auth/password: checks the current one, ends the user's other sessions and
// re-issues this one, so the page stays signed in with the new CSRF token).

import { field, h, replace } from "../dom.js";
import { post, session } from "../http.js";
import { showToast } from "../toast.js";
import { pageHead, panel } from "./page.js";

const MIN_PASSWORD = 8;

/** Render the account page; returns the cleanup. */
export function renderAccount(container, _params, shell) {
  shell.setTitle("Account");
  const me = session.user || { username: "?", role: "user" };
  const current = h("input", { id: "own-pass-current", type: "password", autocomplete: "current-password", required: true });
  const pw = h("input", { id: "own-pass", type: "password", autocomplete: "new-password", required: true });
  const again = h("input", { id: "own-pass-2", type: "password", autocomplete: "new-password", required: true });
  const error = h("p", { class: "form-error", role: "alert", hidden: true, dataset: { testid: "own-pass-error" } });
  const save = h("button", { type: "submit", class: "btn btn-primary", text: "Change password" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Change your password" },
    field("Current password", current),
    field("New password", pw),
    field("New password again", again),
    save,
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.hidden = true;
    const problem =
      pw.value.length < MIN_PASSWORD
        ? `Use at least ${MIN_PASSWORD} characters.`
        : pw.value !== again.value
          ? "The two passwords differ."
          : "";
    if (problem) {
      error.textContent = problem;
      error.hidden = false;
      return;
    }
    save.disabled = true;
    try {
      const reply = await post("/api/auth/password", { current_password: current.value, new_password: pw.value }, { quiet401: true });
      session.csrf = reply.csrf_token; // the re-issued session's token
      for (const input of [current, pw, again]) input.value = "";
      save.disabled = false;
      showToast("Password changed; your other sessions were signed out", "success");
    } catch (err) {
      // A wrong current password is a 401 too: only another 401 means the session is gone.
      if (err.status === 401 && err.code !== "bad_credentials") {
        shell.signOut("Your session ended. Sign in again.");
        return;
      }
      error.textContent = err.code === "bad_credentials" ? "The current password is wrong." : `Could not change the password: ${err.message}`;
      error.hidden = false;
      save.disabled = false;
    }
  });
  const body = [h("p", { class: "muted", text: "Changing it signs you out everywhere else; this browser stays signed in." }), error, form];
  replace(
    container,
    pageHead("Account", "Who you are signed in as."),
    panel(
      "Signed in as",
      h(
        "dl",
        { class: "kv", dataset: { testid: "account-info" } },
        h("dt", { text: "Username" }),
        h("dd", { text: me.username }),
        h("dt", { text: "Role" }),
        h("dd", {}, h("span", { class: `role role-${me.role}`, text: me.role })),
      ),
    ),
    panel("Password", body),
  );
  return () => {};
}
