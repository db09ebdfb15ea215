// The page head and panel every simple page uses.

import { h } from "../dom.js";

let panels = 0;

/** `<h1>` with a one-line explanation, and optional toolbar nodes on the right. */
export function pageHead(title, text, ...tools) {
  return h(
    "div",
    { class: "page-head" },
    h("div", {}, h("h1", { text: title }), text ? h("p", { text }) : null),
    tools.length ? h("div", { class: "toolbar" }, tools) : null,
  );
}

/** A titled panel; `body` is nodes (an array is fine). */
export function panel(title, body, { testid = null, head = null } = {}) {
  const id = `panel-h-${++panels}`;
  return h(
    "section",
    { class: "panel", "aria-labelledby": id, dataset: testid ? { testid } : {} },
    h("div", { class: "panel-head" }, h("h2", { id, text: title }), head),
    h("div", { class: "panel-body" }, body),
  );
}
