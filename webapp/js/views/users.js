// User management for admins: list, add, change role, set a password, delete. At narrow
// widths each row stacks (css: .users-table), so the actions never hide behind a scroll.

import { errorPanel } from "../components.js";
import { field, h, replace, tableHead } from "../dom.js";
import { formatTime } from "../format.js";
import { del, get, listOf, patch, post, session } from "../http.js";
import { showToast } from "../toast.js";

/** Render the users page; returns the cleanup. */
export function renderUsers(container, _params, shell) {
  shell.setTitle("Users");
  let alive = true;
  if (session.user?.role !== "admin") {
    replace(container, errorPanel({ title: "Administrators only", reason: "Ask an administrator to manage users." }));
    return () => {};
  }
  const tbody = h("tbody", {});
  const name = h("input", { id: "new-user", type: "text", autocomplete: "off", autocapitalize: "none", required: true });
  const pass = h("input", { id: "new-pass", type: "password", autocomplete: "new-password", required: true });
  const role = h(
    "select",
    { id: "new-role" },
    h("option", { value: "user", text: "User" }),
    h("option", { value: "admin", text: "Admin" }),
  );
  const add = h("button", { type: "submit", class: "btn btn-primary", text: "Add user" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Add a user" },
    field("Username", name),
    field("Password", pass),
    field("Role", role),
    add,
  );
  const roleButton = (u) => {
    const next = u.role === "admin" ? "user" : "admin";
    return h("button", {
      type: "button",
      class: "btn btn-sm",
      "aria-label": `Make ${u.username} ${next === "admin" ? "an admin" : "a user"}`,
      text: next === "admin" ? "Make admin" : "Make user",
      onclick: async () => {
        try {
          await patch(`/api/users/${encodeURIComponent(u.username)}`, { role: next });
          showToast(`${u.username} is now ${next === "admin" ? "an admin" : "a user"}`, "success");
        } catch (err) {
          showToast(`Could not change ${u.username}: ${err.message}`, "error");
        }
        load();
      },
    });
  };
  /** An inline form under the user's row: a new password, Save, Cancel. */
  const passwordRow = (u, tr) => {
    const input = h("input", {
      id: `pw-${u.username}`,
      type: "password",
      autocomplete: "new-password",
      minlength: 8,
      required: true,
    });
    const save = h("button", { type: "submit", class: "btn btn-sm btn-primary", text: "Save password" });
    const cancel = h("button", { type: "button", class: "btn btn-sm", text: "Cancel" });
    const form = h(
      "form",
      { class: "inline-form", "aria-label": `New password for ${u.username}` },
      field(`New password for ${u.username}`, input),
      save,
      cancel,
    );
    const row = h("tr", { class: "pw-row" }, h("td", { colspan: 4 }, form));
    cancel.addEventListener("click", () => row.remove());
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      save.disabled = true;
      try {
        await patch(`/api/users/${encodeURIComponent(u.username)}`, { password: input.value });
        showToast(`Password of ${u.username} changed; their sessions have ended`, "success");
        row.remove();
      } catch (err) {
        showToast(`Could not change the password of ${u.username}: ${err.message}`, "error");
        save.disabled = false;
      }
    });
    tr.after(row);
    input.focus();
  };

  const load = async () => {
    try {
      const users = listOf(await get("/api/users"), "users");
      if (!alive) return;
      replace(
        tbody,
        users.map((u) => {
          const me = u.username === session.user.username;
          const tr = h(
            "tr",
            {},
            h("td", { dataset: { label: "Username" } }, h("strong", { text: u.username })),
            h("td", { dataset: { label: "Role" } }, h("span", { class: `role role-${u.role}`, text: u.role })),
            h("td", { class: "muted nowrap", dataset: { label: "Created" }, text: formatTime(u.created_at) }),
            h(
              "td",
              { class: "row-actions" },
              me ? h("a", { class: "btn btn-sm", href: "#/account", text: "You: account" }) : roleButton(u),
              me
                ? null
                : h("button", {
                    type: "button",
                    class: "btn btn-sm",
                    "aria-label": `Set a new password for ${u.username}`,
                    text: "Set password",
                    onclick: () => passwordRow(u, tr),
                  }),
              me
                ? null
                : h("button", {
                    type: "button",
                    class: "btn btn-sm btn-danger",
                    "aria-label": `Delete user ${u.username}`,
                    text: "Delete",
                    onclick: async () => {
                      if (!window.confirm(`Delete user ${u.username}? Their sessions and tokens end now.`)) return;
                      try {
                        await del(`/api/users/${encodeURIComponent(u.username)}`);
                        showToast(`User ${u.username} deleted`, "success");
                      } catch (err) {
                        showToast(`Could not delete ${u.username}: ${err.message}`, "error");
                      }
                      load();
                    },
                  }),
            ),
          );
          return tr;
        }),
      );
    } catch (err) {
      if (alive) replace(tbody, h("tr", {}, h("td", { colspan: 4, class: "muted", text: `Could not load users: ${err.message}` })));
    }
  };
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!name.value.trim() || !pass.value) {
      showToast("Enter a username and a password.", "error");
      return;
    }
    add.disabled = true;
    try {
      await post("/api/users", { username: name.value.trim(), password: pass.value, role: role.value });
      showToast(`User ${name.value.trim()} added`, "success");
      form.reset();
      load();
    } catch (err) {
      showToast(`Could not add user: ${err.message}`, "error");
    } finally {
      add.disabled = false;
    }
  });
  replace(
    container,
    h(
      "div",
      { class: "page-head" },
      h(
        "div",
        {},
        h("h1", { text: "Users" }),
        h("p", { text: "Admins manage plugins and users; users view and use plugins." }),
      ),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "add-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "add-h", text: "Add a user" })),
      h("div", { class: "panel-body" }, form),
    ),
    h(
      "section",
      { class: "panel", "aria-labelledby": "list-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "list-h", text: "All users" })),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "users-table", dataset: { testid: "users-table" } },
          tableHead(["Username"], ["Role"], ["Created"], ["Actions", true]),
          tbody,
        ),
      ),
    ),
  );
  load();
  return () => {
    alive = false;
  };
}
