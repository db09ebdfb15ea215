#!/usr/bin/env node
// hello-node: a Toru plugin in Node.js with no npm dependencies.
//
// Protocol v1 by hand: 4-byte big-endian length + UTF-8 JSON frames on the Unix socket in
// TORU_PLUGIN_SOCKET. Node's event loop answers every request as soon as it is ready, so
// replies may leave out of order; the host matches them by request_id.
// The visit counter lives in the host's KV store, reached over the inherited socket whose
// fd is in TORU_KV_FD (see docs/plugins/PROTOCOL.md).
"use strict";

const fs = require("fs");
const net = require("net");
const os = require("os");

const METADATA = {
  id: "hello-node",
  name: "Hello Node",
  version: "1.0.0",
  author: "Toru",
  icon: "🟩",
  route: "/hello-node",
  // Every connection is served on its own (onConnection below), so Toru's workers may
  // connect directly instead of going through the supervisor (docs/plugins/PROTOCOL.md).
  multi_connection: true,
};
const MAX_FRAME = 16 * 1024 * 1024;

const BUNDLE = `
(function () {
  window.ToruPlugins = window.ToruPlugins || {};
  window.ToruPlugins["hello-node"] = {
    mount: function (container, api) {
      var root = document.createElement("section");
      root.setAttribute("data-testid", "node-root");
      root.innerHTML = "<h2>🟩 Hello from Node.js</h2><p data-testid='node-info'>Loading…</p>" +
        "<button type='button' data-testid='node-visit'>Count a visit</button>";
      container.appendChild(root);
      container.__nodeRoot = root;
      var info = root.querySelector("[data-testid=node-info]");
      function show(d) { info.textContent = d.message + " — visits: " + d.visits + " (node " + d.node + ")"; }
      api.fetch("/").then(function (r) { return r.json(); }).then(show)
        .catch(function (e) { info.textContent = "Error: " + e.message; });
      root.querySelector("button").addEventListener("click", function () {
        api.fetch("/visit", { method: "POST" }).then(function (r) { return r.json(); }).then(function (d) {
          show(d);
          api.showToast("Visits: " + d.visits, "success");
        });
      });
    },
    unmount: function (container) {
      if (container.__nodeRoot) container.__nodeRoot.remove();
      container.__nodeRoot = null;
    }
  };
})();
`;

function log(level, message, fields) {
  const entry = Object.assign(
    { timestamp: new Date().toISOString(), level, plugin: METADATA.id, message },
    fields || {}
  );
  process.stderr.write(JSON.stringify(entry) + "\n");
}

function frame(msg) {
  const body = Buffer.from(JSON.stringify(msg), "utf8");
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

// Incremental decoder: feed chunks, get whole messages. Throws on a bad frame.
function decoder(onMessage) {
  let buf = Buffer.alloc(0);
  return function feed(chunk) {
    buf = buf.length ? Buffer.concat([buf, chunk]) : chunk;
    while (buf.length >= 4) {
      const size = buf.readUInt32BE(0);
      if (size > MAX_FRAME) throw new Error(`frame of ${size} bytes exceeds ${MAX_FRAME}`);
      if (buf.length < 4 + size) break;
      const msg = JSON.parse(buf.subarray(4, 4 + size).toString("utf8"));
      buf = buf.subarray(4 + size);
      if (msg === null || typeof msg !== "object" || Array.isArray(msg)) throw new Error("not an object");
      onMessage(msg);
    }
  };
}

function message(type, payload, requestId) {
  const msg = { type, timestamp: new Date().toISOString(), payload };
  if (requestId !== undefined && requestId !== null) msg.request_id = requestId;
  return msg;
}

// ---------------------------------------------------------------- host KV client

const memory = new Map();
let kvSocket = null;
let kvNext = 0;
const kvPending = new Map();

function connectKv() {
  const fd = parseInt(process.env.TORU_KV_FD || "", 10);
  if (!Number.isInteger(fd)) return;
  kvSocket = new net.Socket({ fd, readable: true, writable: true });
  kvSocket.on("data", decoder((msg) => {
    const p = kvPending.get(msg.request_id);
    if (!p) return;
    kvPending.delete(msg.request_id);
    const payload = msg.payload || {};
    if (payload.error) p.reject(new Error(payload.error));
    else p.resolve(payload.value === undefined ? null : payload.value);
  }));
  kvSocket.on("error", () => {});
  kvSocket.on("close", () => {
    // The host owns the other end: when it closes, the host is gone.
    log("info", "kv channel closed by the host; exiting");
    shutdown(0);
  });
}

function kv(action, key, value) {
  if (!kvSocket) {
    if (action === "get") return Promise.resolve(memory.has(key) ? memory.get(key) : null);
    if (action === "set") memory.set(key, value);
    if (action === "delete") memory.delete(key);
    return Promise.resolve(null);
  }
  const requestId = "n" + ++kvNext;
  const op = { action, key };
  if (action === "set") op.value = value;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      kvPending.delete(requestId);
      reject(new Error("kv timeout"));
    }, 5000);
    kvPending.set(requestId, {
      resolve: (v) => { clearTimeout(timer); resolve(v); },
      reject: (e) => { clearTimeout(timer); reject(e); },
    });
    kvSocket.write(frame(message("kv", { payload: op }, requestId)));
  });
}

// ---------------------------------------------------------------- handlers

let instanceId = process.env.TORU_INSTANCE_ID || "";

async function visits(increment) {
  let n = parseInt((await kv("get", "visits")) || "0", 10);
  if (increment) {
    n += 1;
    await kv("set", "visits", String(n));
  }
  return n;
}

async function handleHttp(req) {
  const path = String(req.path || "/").split("?")[0];
  const json = (status, obj) => ({ status, headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });
  const info = async (increment) => ({
    message: "Hello from Node.js",
    node: process.version,
    instance_id: instanceId,
    visits: await visits(increment),
    uptime_seconds: Math.round(process.uptime()),
    hostname: os.hostname(),
  });
  if (req.method === "GET" && (path === "/" || path === "")) return json(200, await info(false));
  if (req.method === "POST" && path === "/visit") return json(200, await info(true));
  if (req.method === "GET" && path === "/bundle.js") {
    return { status: 200, headers: { "Content-Type": "application/javascript" }, body: BUNDLE };
  }
  if (req.method === "GET" && path === "/health") return json(200, { status: "ok" });
  return json(404, { error: "not_found", message: `no route for ${req.method} ${path}` });
}

async function handleKv(op) {
  if (op.action === "get") return kv("get", op.key);
  if (op.action === "set") { await kv("set", op.key, op.value); return op.value; }
  if (op.action === "delete") { await kv("delete", op.key); return null; }
  throw new Error("unknown kv action");
}

// ---------------------------------------------------------------- server

let server = null;
const sockets = new Set();

function shutdown(code) {
  if (server) {
    server.close();
    server = null;
    for (const s of sockets) s.destroy();
    try { fs.unlinkSync(process.env.TORU_PLUGIN_SOCKET); } catch (e) { /* already gone */ }
  }
  if (kvSocket) kvSocket.destroy();
  process.exit(code);
}

function onConnection(sock) {
  sockets.add(sock);
  sock.on("close", () => sockets.delete(sock));
  sock.on("error", () => {});
  const send = (msg) => { if (!sock.destroyed) sock.write(frame(msg)); };
  const feed = decoder((msg) => {
    const outer = msg.payload && typeof msg.payload === "object" ? msg.payload : {};
    const inner = outer.payload && typeof outer.payload === "object" ? outer.payload : outer;
    if (msg.type === "lifecycle") {
      if (outer.action === "init") {
        instanceId = outer.instance_id || instanceId;
        log("info", "initialised", { instance_id: instanceId });
      } else if (outer.action === "shutdown") {
        log("info", "shutting down");
        shutdown(0);
      }
    } else if (msg.type === "http") {
      handleHttp(inner).catch((err) => {
        log("error", "handler failed", { error: String(err) });
        return { status: 500, headers: { "Content-Type": "application/json" }, body: JSON.stringify({ error: "plugin_error", message: String(err) }) };
      }).then((resp) => send(message("http", resp, msg.request_id)));
    } else if (msg.type === "kv") {
      handleKv(inner)
        .then((value) => send(message("kv", { value: value === undefined ? null : value }, msg.request_id)))
        .catch((err) => send(message("kv", { value: null, error: String(err.message || err) }, msg.request_id)));
    }
  });
  sock.on("data", (chunk) => {
    try {
      feed(chunk);
    } catch (err) {
      log("warn", "closing connection after a malformed frame", { error: String(err.message || err) });
      sock.destroy();
    }
  });
}

function main() {
  if (process.argv.includes("--metadata")) {
    process.stdout.write(JSON.stringify(METADATA) + "\n");
    return;
  }
  const path = process.env.TORU_PLUGIN_SOCKET;
  if (!path) {
    process.stderr.write("hello-node is a Toru plugin: the host starts it with TORU_PLUGIN_SOCKET set. Try --metadata.\n");
    process.exit(1);
  }
  try { fs.unlinkSync(path); } catch (e) { /* no stale socket */ }
  connectKv();
  const ppid = process.ppid;
  setInterval(() => { if (process.ppid !== ppid) shutdown(0); }, 1000).unref();
  process.on("SIGTERM", () => shutdown(0));
  server = net.createServer(onConnection);
  const oldMask = process.umask(0o177);
  server.listen(path, () => {
    process.umask(oldMask);
    fs.chmodSync(path, 0o600);
    log("info", "listening", { socket: path });
  });
}

main();
