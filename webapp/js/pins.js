// Binary pinning in the console (docs/SECURITY.md, "Binary pinning"): the admin's Install
// upload (POST /api/plugins/install, multipart) and the notice of a plugin whose binary is
// not the one an admin approved, with both hashes and, for admins, Approve
// (POST /api/plugins/:id/approve).

import { h, icon } from "./dom.js";
import { post, request } from "./http.js";
import { pluginStore } from "./store.js";
import { showToast } from "./toast.js";

const UPLOAD_MS = 300000; // a large binary on a slow link; the server bounds each chunk

/** "Install…" (admin): pick an executable, upload it; new plugins stay disabled unless ticked. */
export function installControl() {
  const input = h("input", {
    type: "file",
    class: "visually-hidden",
    "aria-label": "Plugin binary to install",
    dataset: { testid: "install-file" },
  });
  const enable = h("input", { type: "checkbox", dataset: { testid: "install-enable" } });
  const btn = h(
    "button",
    { type: "button", class: "btn btn-sm", dataset: { testid: "install" } },
    icon("plugins"),
    "Install…",
  );
  btn.addEventListener("click", () => input.click());
  input.addEventListener("change", async () => {
    const file = input.files && input.files[0];
    if (!file) return;
    const form = new FormData();
    form.append("enable", enable.checked ? "true" : "false");
    form.append("file", file, file.name);
    btn.disabled = true;
    try {
      const r = await request("POST", "/api/plugins/install", form, { timeoutMs: UPLOAD_MS });
      if (r.plugin) pluginStore.update(r.plugin);
      const state = r.plugin ? `, ${r.plugin.state}` : "";
      showToast(`${r.id} ${r.version} ${r.replaced ? "upgraded" : "installed"}${state}`, "success");
    } catch (err) {
      showToast(`Install failed: ${err.message}`, "error");
    } finally {
      btn.disabled = false;
      input.value = "";
      pluginStore.refresh();
    }
  });
  return h(
    "span",
    { class: "install-control" },
    input,
    btn,
    h("label", { class: "muted install-enable" }, enable, " enable"),
  );
}

/** The Approve button: pins the new hash and runs it (the server refuses a second change). */
function approveButton(p) {
  const btn = h("button", {
    type: "button",
    class: "btn btn-sm btn-primary",
    dataset: { testid: `approve-${p.id}` },
    text: "Approve",
  });
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      const info = await post(`/api/plugins/${encodeURIComponent(p.id)}/approve`);
      if (info && info.id) pluginStore.update(info);
      showToast(`${p.name || p.id}: new binary approved`, "success");
    } catch (err) {
      showToast(`Could not approve ${p.name || p.id}: ${err.message}`, "error");
    } finally {
      btn.disabled = false;
      pluginStore.refresh();
    }
  });
  return btn;
}

/** True when the plugin's binary is not the approved one (state `changed`, or a running
 * old version whose file was replaced). */
export const binaryChanged = (p) => Boolean(p && !p.stale && p.binary_change);

/** Nodes for the notice: what happened, both hashes, and Approve for admins. */
export function changeNotice(p, isAdmin) {
  const c = p.binary_change || {};
  const what =
    p.state === "running"
      ? `plugins/${c.binary || p.binary} was replaced; the approved version keeps running until an admin approves the new one.`
      : `plugins/${c.binary || p.binary} differs from the binary an admin approved.`;
  return [
    h("span", { text: what }),
    h(
      "dl",
      { class: "hashes" },
      h("dt", { text: "Approved SHA-256" }),
      h("dd", {}, h("code", { dataset: { testid: "pinned-hash" }, text: c.pinned_sha256 || "none: never approved" })),
      h("dt", { text: "Found SHA-256" }),
      h("dd", {}, h("code", { dataset: { testid: "found-hash" }, text: c.found_sha256 || "?" })),
    ),
    isAdmin ? approveButton(p) : h("span", { class: "muted", text: "An admin can approve it." }),
  ];
}
