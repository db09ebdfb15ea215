// User management for admins: list, add, change role, delete.

import { errorPanel } from "../components.js";
import { h, replace, tableHead } from "../dom.js";
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
    h("div", { class: "field" }, h("label", { for: "new-user", text: "Username" }), name),
    h("div", { class: "field" }, h("label", { for: "new-pass", text: "Password" }), pass),
    h("div", { class: "field" }, h("label", { for: "new-role", text: "Role" }), role),
    add,
  );
  const roleButton = (u) => {
    const next = u.role === "admin" ? "user" : "admin";
    return h("button", {
      type: "button",
      class: "btn btn-sm",
      style: "margin-right:0.5rem",
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
  const load = async () => {
    try {
      const users = listOf(await get("/api/users"), "users");
      if (!alive) return;
      replace(
        tbody,
        users.map((u) =>
          h(
            "tr",
            {},
            h("td", {}, h("strong", { text: u.username })),
            h("td", {}, h("span", { class: `role role-${u.role}`, text: u.role })),
            h("td", { class: "muted nowrap", text: formatTime(u.created_at) }),
            h(
              "td",
              { style: "text-align:right" },
              u.username === session.user.username
                ? h("span", { class: "muted", text: "You" })
                : roleButton(u),
              u.username === session.user.username
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
          ),
        ),
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
          {},
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
