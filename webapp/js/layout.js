// The signed-in shell: dark sidebar (system items, then every enabled plugin with its
// health), a top bar that always shows who is signed in, and the content area.

import { healthDot, pluginIcon, setPluginIcon, updateHealthDot } from "./components.js";
import { h, icon } from "./dom.js";
import { hasFrontend } from "./frontends.js";
import { session } from "./http.js";
import { pluginStore } from "./store.js";
import { themeToggle } from "./theme.js";

export class Shell {
  /** Build the shell into `root`; `onSignOut()` is called from the sign-out button. */
  constructor(root, { onSignOut }) {
    const user = session.user || { username: "?", role: "user" };
    this.signOut = onSignOut; // signOut(note) ends the session and shows the login form
    this.pluginItems = new Map(); // id -> {li, link, dot, label, icon}
    this.currentPath = "";

    this.systemList = h("ul", { class: "nav-list" });
    this.systemLinks = [
      this.navItem("/plugins", "Plugins", icon("plugins"), "nav-plugins"),
      this.navItem("/system", "System", icon("system"), "nav-system"),
      user.role === "admin" ? this.navItem("/users", "Users", icon("users"), "nav-users") : null,
      user.role === "admin" ? this.navItem("/tokens", "API tokens", icon("key"), "nav-tokens") : null,
      this.navItem("/account", "Account", icon("account"), "nav-account"),
    ].filter(Boolean);
    for (const item of this.systemLinks) this.systemList.append(item.li);

    this.pluginList = h("ul", { class: "nav-list", dataset: { testid: "sidebar-plugin-list" } });
    this.pluginSection = h(
      "nav",
      {
        class: "nav-section",
        "aria-labelledby": "nav-plugins-heading",
        dataset: { testid: "sidebar-plugins" },
        hidden: true,
      },
      h("div", { class: "nav-heading", id: "nav-plugins-heading", text: "Plugins" }),
      this.pluginList,
    );

    this.sidebar = h(
      "aside",
      { class: "sidebar", id: "sidebar", dataset: { testid: "sidebar" } },
      h(
        "div",
        { class: "brand" },
        h("span", { class: "brand-mark", "aria-hidden": "true", text: "T" }),
        h("div", {}, "Toru", h("small", { text: "Plugin host" })),
      ),
      h(
        "nav",
        { class: "nav-section", "aria-labelledby": "nav-system-heading" },
        h("div", { class: "nav-heading", id: "nav-system-heading", text: "System" }),
        this.systemList,
      ),
      this.pluginSection,
      (this.liveness = h("div", {
        class: "sidebar-foot",
        dataset: { testid: "liveness" },
        text: "Connecting…",
      })),
    );

    this.menuButton = h(
      "button",
      {
        type: "button",
        class: "btn btn-ghost menu-btn",
        "aria-label": "Open navigation",
        "aria-controls": "sidebar",
        "aria-expanded": "false",
        onclick: () => this.setNavOpen(!this.shell.classList.contains("nav-open")),
      },
      icon("menu"),
    );
    this.title = h("div", { class: "topbar-title", dataset: { testid: "page-title" } });
    const signOut = h(
      "button",
      {
        type: "button",
        class: "btn btn-sm",
        dataset: { testid: "sign-out" },
        "aria-label": "Sign out",
        onclick: () => onSignOut(),
      },
      icon("logout"),
      h("span", { class: "signout-label", text: "Sign out" }),
    );
    const chip = h(
      "div",
      { class: "user-chip", dataset: { testid: "user-chip" } },
      h("span", { class: "avatar", "aria-hidden": "true", text: (user.username || "?")[0] }),
      h("span", { class: "user-name", dataset: { testid: "user-name" }, text: user.username }),
      h("span", {
        class: `role role-${user.role}`,
        dataset: { testid: "user-role" },
        text: user.role,
      }),
    );
    this.content = h("main", { class: "content", id: "main", tabindex: "-1" });
    this.banner = h("div", {
      class: "supervisor-banner",
      role: "alert",
      hidden: true,
      dataset: { testid: "supervisor-banner" },
    });
    this.backdrop = h("div", { class: "backdrop", onclick: () => this.setNavOpen(false) });
    this.shell = h(
      "div",
      { class: "shell" },
      this.sidebar,
      this.backdrop,
      h(
        "div",
        { class: "main" },
        h(
          "header",
          { class: "topbar" },
          this.menuButton,
          this.title,
          h("span", { class: "visually-hidden", text: "Signed in as" }),
          chip,
          themeToggle(),
          signOut,
        ),
        this.banner,
        this.content,
      ),
    );
    this.onKey = (ev) => {
      if (ev.key === "Escape" && this.shell.classList.contains("nav-open")) {
        this.setNavOpen(false);
        this.menuButton.focus();
      }
    };
    document.addEventListener("keydown", this.onKey);
    root.replaceChildren(this.shell);
    this.unsubscribe = pluginStore.subscribe((store) => {
      this.renderPlugins(store.plugins);
      this.renderLiveness(store);
    });
  }

  navItem(path, label, iconNode, testid) {
    const link = h(
      "a",
      { class: "nav-link", href: `#${path}`, dataset: { testid } },
      h("span", { class: "nav-icon" }, iconNode),
      h("span", { class: "nav-label", text: label }),
    );
    link.addEventListener("click", () => this.setNavOpen(false));
    return { path, link, li: h("li", {}, link) };
  }

  /** Keyed update of the enabled plugins with a view, so focus and hover survive each poll. */
  renderPlugins(plugins) {
    // API-only plugins (learnt from bundle.js) are listed in the manager, not here.
    const enabled = plugins.filter(
      (p) => p.enabled && p.state !== "invalid" && hasFrontend(p) !== false,
    );
    const seen = new Set();
    enabled.forEach((p, index) => {
      seen.add(p.id);
      let item = this.pluginItems.get(p.id);
      if (!item) {
        const dot = healthDot(p, { dataset: { testid: `nav-dot-${p.id}` } });
        const label = h("span", { class: "nav-label" });
        const iconEl = pluginIcon(p, "nav-icon");
        const link = h(
          "a",
          { class: "nav-link", href: `#/p/${encodeURIComponent(p.id)}` },
          iconEl,
          label,
          dot,
        );
        link.dataset.testid = `nav-plugin-${p.id}`;
        link.addEventListener("click", () => this.setNavOpen(false));
        item = { li: h("li", {}, link), link, dot, label, iconEl, path: `/p/${p.id}` };
        this.pluginItems.set(p.id, item);
      }
      item.label.textContent = p.name || p.id;
      setPluginIcon(item.iconEl, p);
      updateHealthDot(item.dot, p);
      item.link.setAttribute("aria-label", `${p.name || p.id} (${item.dot.title})`);
      if (this.pluginList.children[index] !== item.li) {
        this.pluginList.insertBefore(item.li, this.pluginList.children[index] || null);
      }
    });
    for (const [id, item] of this.pluginItems) {
      if (!seen.has(id)) {
        item.li.remove();
        this.pluginItems.delete(id);
      }
    }
    this.pluginSection.hidden = enabled.length === 0;
    this.markCurrent(this.currentPath);
  }

  /** Say whether what the page shows is current, so a dead server is never mistaken for calm. */
  renderLiveness(store) {
    const now = new Date();
    const hhmmss = now.toTimeString().slice(0, 8);
    this.banner.hidden = !store.stale;
    if (store.stale) {
      const since = store.staleSince ? store.staleSince.toTimeString().slice(0, 8) : hhmmss;
      this.banner.textContent =
        store.error?.code === "network"
          ? `The server cannot be reached (since ${since}). Plugin states are unknown until it answers; retrying.`
          : `The supervisor does not answer (since ${since}: ${store.error?.message}). ` +
            "Plugin states are unknown until it does; retrying.";
    }
    if (store.error) {
      this.liveness.dataset.state = "down";
      this.liveness.textContent =
        store.error.code === "network"
          ? "Server unreachable — retrying"
          : store.stale
            ? "Supervisor not answering — retrying"
            : `Server error — retrying (${store.error.message})`;
    } else {
      this.liveness.dataset.state = "live";
      this.liveness.textContent = `Live · updated ${hhmmss}`;
    }
  }

  /** Highlight the sidebar entry for `path` (the hash without "#"). */
  markCurrent(path) {
    this.currentPath = path;
    const items = [...this.systemLinks, ...this.pluginItems.values()];
    for (const item of items) {
      const active =
        path === item.path ||
        (item.path === "/plugins" && path.startsWith("/plugins/")) ||
        (item.path !== "/plugins" && path.startsWith(`${item.path}/`));
      if (active) item.link.setAttribute("aria-current", "page");
      else item.link.removeAttribute("aria-current");
    }
  }

  setTitle(text) {
    this.title.textContent = text;
    document.title = `${text} · Toru`;
  }

  setNavOpen(open) {
    this.shell.classList.toggle("nav-open", open);
    this.menuButton.setAttribute("aria-expanded", open ? "true" : "false");
    this.menuButton.setAttribute("aria-label", open ? "Close navigation" : "Open navigation");
    if (open) this.sidebar.querySelector("a")?.focus();
  }

  /** Remove listeners; the caller replaces the DOM. Harmless twice. */
  destroy() {
    this.unsubscribe?.();
    this.unsubscribe = null;
    document.removeEventListener("keydown", this.onKey);
  }
}
