// Dark mode toggle in the top bar. theme-boot.js applies the theme before paint (the
// system's prefers-color-scheme unless the user chose); the choice is kept in localStorage.

import { h, icon } from "./dom.js";

const KEY = "toru.theme"; // also read by theme-boot.js

/** "dark" or "light", as applied to <html data-theme>. */
export function currentTheme() {
  return document.documentElement.dataset.theme === "dark" ? "dark" : "light";
}

/** The top bar's button; `aria-pressed` says whether dark mode is on. */
export function themeToggle() {
  const button = h(
    "button",
    {
      type: "button",
      class: "btn btn-sm btn-icon",
      "aria-label": "Dark mode",
      dataset: { testid: "theme-toggle" },
    },
    icon("moon"),
  );
  const sync = () => {
    const dark = currentTheme() === "dark";
    button.setAttribute("aria-pressed", dark ? "true" : "false");
    button.title = dark ? "Switch to light mode" : "Switch to dark mode";
  };
  button.addEventListener("click", () => {
    const next = currentTheme() === "dark" ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    try {
      localStorage.setItem(KEY, next);
    } catch {
      // Applies to this page only.
    }
    sync();
  });
  new MutationObserver(sync).observe(document.documentElement, {
    attributes: true,
    attributeFilter: ["data-theme"],
  });
  sync();
  return button;
}
