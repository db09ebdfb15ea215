// Toasts: short, polite confirmations; errors stay longer and are announced assertively.

const KINDS = new Set(["info", "success", "error"]);

/** Show `message`; `kind` is info, success or error. Returns the toast element. */
export function showToast(message, kind = "info") {
  const region = document.getElementById("toasts");
  const k = KINDS.has(kind) ? kind : "info";
  const el = document.createElement("div");
  el.className = "toast";
  el.dataset.kind = k;
  el.dataset.testid = "toast";
  el.setAttribute("role", k === "error" ? "alert" : "status");
  const msg = document.createElement("span");
  msg.className = "toast-msg";
  msg.textContent = String(message);
  const close = document.createElement("button");
  close.type = "button";
  close.setAttribute("aria-label", "Dismiss notification");
  close.textContent = "×";
  close.addEventListener("click", () => el.remove());
  el.append(msg, close);
  region.append(el);
  while (region.children.length > 4) region.firstElementChild.remove();
  setTimeout(() => el.remove(), k === "error" ? 9000 : 4500);
  return el;
}
