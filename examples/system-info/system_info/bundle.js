// system-info frontend bundle: a small dashboard refreshed every 5 seconds. Vanilla JS.
(function () {
  "use strict";
  var ID = "system-info";
  var REFRESH_MS = 5000;

  function fmtBytes(n) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : String(n)) + " " + units[i];
  }

  function fmtUptime(s) {
    var d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
    return (d ? d + "d " : "") + h + "h " + m + "m";
  }

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function bar(percent) {
    var outer = el("div", { "class": "si-bar", "style": "background:#ddd;height:8px;border-radius:4px;overflow:hidden" });
    var color = percent >= 90 ? "#c0392b" : percent >= 75 ? "#e67e22" : "#27ae60";
    outer.appendChild(el("div", { "style": "height:100%;width:" + Math.min(100, percent) + "%;background:" + color }));
    return outer;
  }

  function card(title, testid) {
    var c = el("div", { "class": "si-card", "data-testid": testid,
      "style": "border:1px solid #ccc;border-radius:6px;padding:12px;margin:8px 0;min-width:220px" });
    c.appendChild(el("h3", { "style": "margin:0 0 8px" }, title));
    return c;
  }

  function render(root, d) {
    var grid = root.querySelector(".si-grid");
    grid.textContent = "";
    var up = card("Uptime", "si-uptime");
    up.appendChild(el("p", {}, fmtUptime(d.uptime.uptime_seconds) + " — " + d.hostname + " (" + d.kernel + ")"));
    grid.appendChild(up);

    var ld = card("Load", "si-load");
    ld.appendChild(el("p", {}, d.load.load1.toFixed(2) + " / " + d.load.load5.toFixed(2) + " / " +
      d.load.load15.toFixed(2) + " on " + d.load.cpus + " CPUs"));
    ld.appendChild(bar(100 * d.load.load1_per_cpu));
    grid.appendChild(ld);

    var mem = card("Memory", "si-memory");
    mem.appendChild(el("p", {}, fmtBytes(d.memory.used_bytes) + " of " + fmtBytes(d.memory.total_bytes) +
      " used (" + d.memory.used_percent + "%)"));
    mem.appendChild(bar(d.memory.used_percent));
    grid.appendChild(mem);

    var dk = card("Disks", "si-disks");
    d.disks.forEach(function (disk) {
      dk.appendChild(el("p", { "style": "margin:8px 0 2px" }, disk.mount + " — " + fmtBytes(disk.used_bytes) +
        " of " + fmtBytes(disk.used_bytes + disk.free_bytes) + " (" + disk.used_percent + "%)"));
      dk.appendChild(bar(disk.used_percent));
    });
    grid.appendChild(dk);
    root.querySelector(".si-updated").textContent = "Updated " + new Date().toLocaleTimeString();
  }

  window.ToruPlugins = window.ToruPlugins || {};
  window.ToruPlugins[ID] = {
    mount: function (container, api) {
      var root = el("section", { "class": "system-info", "data-testid": "si-root" });
      root.appendChild(el("h2", {}, "📊 System Info"));
      root.appendChild(el("div", { "class": "si-grid", "style": "display:flex;flex-wrap:wrap;gap:8px" }, "Loading…"));
      root.appendChild(el("small", { "class": "si-updated" }));
      container.appendChild(root);
      var failed = false;
      function refresh() {
        api.fetch("/").then(function (r) {
          if (!r.ok) throw new Error("HTTP " + r.status);
          return r.json();
        }).then(function (d) { failed = false; render(root, d); }).catch(function (e) {
          if (!failed) api.showToast("System info unavailable: " + e.message, "error");
          failed = true;
        });
      }
      refresh();
      container.__siState = { root: root, timer: setInterval(refresh, REFRESH_MS) };
    },
    unmount: function (container) {
      var st = container.__siState;
      if (!st) return;
      clearInterval(st.timer);
      if (st.root.parentNode) st.root.parentNode.removeChild(st.root);
      container.__siState = null;
    }
  };
})();
