// Tiny DOM helpers: build elements from data, never from HTML strings (plugin names,
// log lines and stderr are untrusted text).

/**
 * Create an element. `attrs` keys: `class`, `text`, `dataset`, `on<Event>` (listener),
 * boolean values (true adds the attribute, false/null/undefined skips it), anything else
 * becomes an attribute. Children may be nodes, strings, numbers, arrays or null.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "text") el.textContent = String(value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

/** Append nodes, strings and (nested) arrays of them; skips null/undefined/false. */
export function append(parent, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace every child of `el` with `children`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A labelled form control: `<div class="field"><label for=input.id>…</label>input</div>`. */
export function field(label, input, { grow = false } = {}) {
  return h(
    "div",
    { class: grow ? "field grow" : "field" },
    h("label", { for: input.id, text: label }),
    input,
  );
}

/** `<thead>` with one column header per label (null or "" for a visually hidden one). */
export function tableHead(...labels) {
  const cells = labels.map(([text, hidden]) =>
    h("th", { scope: "col" }, hidden ? h("span", { class: "visually-hidden", text }) : text),
  );
  return h("thead", {}, h("tr", {}, cells));
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** Create an SVG element with attributes. */
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") el.textContent = String(value);
    else el.setAttribute(key, String(value));
  }
  for (const child of children.flat()) if (child) el.append(child);
  return el;
}

/** Outline icons for the system navigation (inline so nothing loads from elsewhere). */
export function icon(name) {
  const paths = {
    plugins:
      "M9 3v3M15 3v3M7 6h10v5a5 5 0 0 1-10 0V6zM12 16v5",
    users:
      "M16 19v-1a4 4 0 0 0-4-4H7a4 4 0 0 0-4 4v1M9.5 10a3.5 3.5 0 1 0 0-7 3.5 3.5 0 0 0 0 7zM21 19v-1a4 4 0 0 0-3-3.85M15.5 3.15a3.5 3.5 0 0 1 0 6.7",
    menu: "M4 6h16M4 12h16M4 18h16",
    logout: "M15 17l5-5-5-5M20 12H9M12 21H5a1 1 0 0 1-1-1V4a1 1 0 0 1 1-1h7",
    refresh: "M20 11a8 8 0 1 0-2.3 5.7M20 4v7h-7",
    system: "M4 5h16v11H4zM9 20h6M12 16v4M7 12l3-3 2 2 4-4",
    key: "M14.5 9.5a4 4 0 1 0-3.2 3.9L13 15h2v2h2v2h3v-3l-5.4-5.4a4 4 0 0 0-.1-1.1zM8 8h.01",
    account: "M12 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM4 21a8 8 0 0 1 16 0",
    moon: "M21 12.8A9 9 0 1 1 11.2 3a7 7 0 0 0 9.8 9.8z",
  };
  return svg(
    "svg",
    {
      viewBox: "0 0 24 24",
      width: 16,
      height: 16,
      fill: "none",
      stroke: "currentColor",
      "stroke-width": 1.8,
      "stroke-linecap": "round",
      "stroke-linejoin": "round",
      "aria-hidden": "true",
      focusable: "false",
    },
    svg("path", { d: paths[name] || "" }),
  );
}
