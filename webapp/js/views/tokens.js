// API tokens (admins): create one (its secret is shown once), list them, revoke one.

import { field, h, replace, tableHead } from "../dom.js";
import { formatTime } from "../format.js";
import { del, get, listOf, post, session } from "../http.js";
import { errorPanel } from "../components.js";
import { showToast } from "../toast.js";
import { pageHead, panel } from "./page.js";

/** The once-only secret with a copy button; it is never shown again. */
function secretPanel(created) {
  const value = h("input", {
    id: "token-secret",
    type: "text",
    readonly: true,
    value: created.token,
    dataset: { testid: "token-secret" },
  });
  const copy = h("button", { type: "button", class: "btn btn-sm", text: "Copy" });
  copy.addEventListener("click", async () => {
    value.select();
    try {
      await navigator.clipboard.writeText(created.token);
      showToast("Token copied", "success");
    } catch {
      showToast("Copy it from the selected field (the browser refused the clipboard).", "info");
    }
  });
  return h(
    "div",
    { class: "secret", role: "status", dataset: { testid: "token-created" } },
    h("p", {}, h("strong", { text: `Token “${created.name}” for ${created.username}. ` }), "Copy it now: it will not be shown again."),
    h("div", { class: "inline-form" }, field("Secret", value, { grow: true }), copy),
  );
}

/** Render the tokens page; returns the cleanup. */
export function renderTokens(container, _params, shell) {
  shell.setTitle("API tokens");
  if (session.user?.role !== "admin") {
    replace(container, errorPanel({ title: "Administrators only", reason: "Ask an administrator for an API token." }));
    return () => {};
  }
  let alive = true;
  const tbody = h("tbody", {});
  const created = h("div", {});
  const name = h("input", { id: "token-name", type: "text", autocomplete: "off", required: true, maxlength: 100 });
  const owner = h("select", { id: "token-user" }, h("option", { value: session.user.username, text: session.user.username }));
  const add = h("button", { type: "submit", class: "btn btn-primary", text: "Create token" });
  const form = h(
    "form",
    { class: "inline-form", "aria-label": "Create an API token" },
    field("Token name", name),
    field("For user", owner),
    add,
  );
  const load = async () => {
    try {
      const tokens = listOf(await get("/api/auth/tokens"), "tokens");
      if (!alive) return;
      replace(
        tbody,
        tokens.length
          ? tokens.map((t) =>
              h(
                "tr",
                { dataset: { testid: "token-row" } },
                h("td", { dataset: { label: "Name" } }, h("strong", { text: t.name })),
                h("td", { dataset: { label: "User" }, text: t.username }),
                h("td", { class: "muted nowrap", dataset: { label: "Created" }, text: formatTime(t.created_at) }),
                h("td", { class: "muted nowrap", dataset: { label: "Last used", testid: "token-last-used" }, text: t.last_used_at ? formatTime(t.last_used_at) : "never" }),
                h(
                  "td",
                  { class: "row-actions" },
                  h("button", {
                    type: "button",
                    class: "btn btn-sm btn-danger",
                    "aria-label": `Revoke token ${t.name}`,
                    text: "Revoke",
                    onclick: async () => {
                      if (!window.confirm(`Revoke token “${t.name}”? Clients using it are refused at once.`)) return;
                      try {
                        await del(`/api/auth/tokens/${encodeURIComponent(t.id)}`);
                        showToast(`Token ${t.name} revoked`, "success");
                      } catch (err) {
                        showToast(`Could not revoke ${t.name}: ${err.message}`, "error");
                      }
                      load();
                    },
                  }),
                ),
              ),
            )
          : h("tr", {}, h("td", { colspan: 5, class: "muted", text: "No API tokens yet." })),
      );
    } catch (err) {
      if (alive) replace(tbody, h("tr", {}, h("td", { colspan: 5, class: "muted", text: `Could not load tokens: ${err.message}` })));
    }
  };
  get("/api/users")
    .then((users) => {
      if (!alive) return;
      const others = listOf(users, "users").filter((u) => u.username !== session.user.username);
      owner.append(...others.map((u) => h("option", { value: u.username, text: u.username })));
    })
    .catch(() => {}); // the owner list then offers only yourself
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    if (!name.value.trim()) {
      showToast("Give the token a name.", "error");
      return;
    }
    add.disabled = true;
    try {
      const made = await post("/api/auth/tokens", { name: name.value.trim(), username: owner.value });
      replace(created, secretPanel(made));
      form.reset();
      load();
    } catch (err) {
      showToast(`Could not create the token: ${err.message}`, "error");
    } finally {
      add.disabled = false;
    }
  });
  replace(
    container,
    pageHead("API tokens", "Bearer tokens for scripts and monitoring: Authorization: Bearer <token>."),
    panel("Create a token", [form, created]),
    panel(
      "All tokens",
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "users-table", dataset: { testid: "tokens-table" } },
          tableHead(["Name"], ["User"], ["Created"], ["Last used"], ["Actions", true]),
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
