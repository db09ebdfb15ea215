// "Rescan plugins" (admin): POST /api/plugins/rescan makes the supervisor re-read
// plugins/*.binary and probe again every binary without metadata at once, the retry of an
// invalid plugin; the plugin list is then fetched again.

import { h, icon } from "./dom.js";
import { post } from "./http.js";
import { pluginStore } from "./store.js";
import { showToast } from "./toast.js";

/** What one rescan reply says, for the toast. */
function rescanSummary(r) {
  const added = r?.added?.length || 0;
  const removed = r?.removed?.length || 0;
  if (!added && !removed) return `Rescanned: ${r?.total ?? "?"} plugins, nothing new`;
  return `Rescanned: ${added} added, ${removed} removed, ${r.total} plugins`;
}

/** A button that runs one rescan (disabled while it runs) and refreshes the plugin list. */
export function rescanButton({ label = "Rescan plugins", testid = "rescan", small = true } = {}) {
  const btn = h("button", { type: "button", class: small ? "btn btn-sm" : "btn", dataset: { testid } }, icon("refresh"), label);
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    try {
      showToast(rescanSummary(await post("/api/plugins/rescan")), "success");
    } catch (err) {
      showToast(`Rescan failed: ${err.message}`, "error");
    } finally {
      btn.disabled = false;
      pluginStore.refresh();
    }
  });
  return btn;
}
