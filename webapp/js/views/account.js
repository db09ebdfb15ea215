// The signed-in user's own account: who they are and, for admins, a new password
// (PATCH /api/users/<me>; the API has no self-service endpoint for plain users).

import { field, h, replace } from "../dom.js";
import { patch, session } from "../http.js";
import { showToast } from "../toast.js";
import { pageHead, panel } from "./page.js";

const MIN_PASSWORD = 8;

/** Render the account page; returns the cleanup. */
export function renderAccount(container, _params, shell) {
  shell.setTitle("Account");
  const me = session.user || { username: "?", role: "user" };
  const pw = h("input", { id: "own-pass", type: "password", autocomplete: "new-password", required: true });
  const again = h("input", { id: "own-pass-2", type: "password", autocomplete: "new-password", required: true });
  const error = h("p", { class: "form-error", role: "alert", hidden: true, dataset: { testid: "own-pass-error" } });
  const save = h("button", { type: "submit", class: "btn btn-primary", text: "Change password" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Change your password" },
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
      await patch(`/api/users/${encodeURIComponent(me.username)}`, { password: pw.value });
      showToast("Password changed", "success");
      // A new password ends every session of the user, this one included.
      shell.signOut("Your password was changed. Sign in with the new one.");
    } catch (err) {
      error.textContent = `Could not change the password: ${err.message}`;
      error.hidden = false;
      save.disabled = false;
    }
  });
  const body =
    me.role === "admin"
      ? [h("p", { class: "muted", text: "Changing it signs you out everywhere, this browser included." }), error, form]
      : [
          h("p", {
            dataset: { testid: "own-pass-unavailable" },
            text: "Ask an administrator to set a new password for you: Toru's API lets only administrators change passwords.",
          }),
        ];
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
