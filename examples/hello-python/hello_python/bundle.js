// hello-python frontend bundle: vanilla JS, no build step.
// Contract: window.ToruPlugins[id] = {mount(container, api), unmount(container)}.
(function () {
  "use strict";
  var ID = "hello-python";

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function readJson(resp) {
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    return resp.json();
  }

  window.ToruPlugins = window.ToruPlugins || {};
  window.ToruPlugins[ID] = {
    mount: function (container, api) {
      var root = el("section", { "class": "hello-python", "data-testid": "hello-root" });
      root.appendChild(el("h2", {}, "👋 Hello from Python"));
      root.appendChild(el("p", {}, "A counter kept in this plugin's key-value store on the host."));
      var row = el("p", {});
      row.appendChild(document.createTextNode("Count: "));
      var count = el("strong", { "data-testid": "hello-count" }, "…");
      row.appendChild(count);
      root.appendChild(row);
      var button = el("button", { "type": "button", "data-testid": "hello-increment" }, "Increment");
      root.appendChild(button);
      container.appendChild(root);
      container.__helloRoot = root;

      api.fetch("/counter").then(readJson).then(function (data) {
        count.textContent = String(data.count);
      }).catch(function (err) {
        count.textContent = "?";
        api.showToast("Could not load the count: " + err.message, "error");
      });

      button.addEventListener("click", function () {
        button.disabled = true;
        api.fetch("/counter/increment", { method: "POST" }).then(readJson).then(function (data) {
          count.textContent = String(data.count);
          api.showToast("Count is " + data.count, "success");
        }).catch(function (err) {
          api.showToast("Increment failed: " + err.message, "error");
        }).then(function () { button.disabled = false; });
      });
    },
    unmount: function (container) {
      var root = container.__helloRoot;
      if (root && root.parentNode) root.parentNode.removeChild(root);
      container.__helloRoot = null;
      window.__helloUnmounted = (window.__helloUnmounted || 0) + 1;
    }
  };
})();
