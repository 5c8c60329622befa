// The status page: redraws from the node's JSON endpoints when its event stream says
// something changed, polling only while the stream is down. No build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
const text = (v) => (v === null || v === undefined ? "" : String(v));
function cell(tr, v, cls) {
  const td = document.createElement("td");
  td.textContent = text(v);
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}
function rows(id, items, fill) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  for (const it of items) {
    const tr = document.createElement("tr");
    fill(tr, it);
    body.appendChild(tr);
  }
  if (!items.length) {
    const tr = document.createElement("tr");
    const td = cell(tr, "none", "muted");
    td.colSpan = 6;
    body.appendChild(tr);
  }
}
function bytes(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + " MB";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " kB";
  return n + " B";
}
function dur(s) {
  s = Math.round(s);
  if (s < 90) return s + " s";
  if (s < 5400) return Math.ceil(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}
function ago(ms) {
  return dur(ms / 1000) + " ago";
}
function utc(secs) {
  return new Date(secs * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC";
}
async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
let shownTip = null;
// Heights this page has shown without being reloaded: the first and the latest.
let firstHeight = null;
let recentBlocks = [];
async function refreshBlocks(height) {
  const list = [];
  for (let h = height; h >= 0 && h > height - 8; h--) {
    try { list.push(await get("/api/blocks/" + h)); } catch (e) { break; }
  }
  recentBlocks = list;
  rows("blocks", list, (tr, b) => {
    cell(tr, b.height);
    cell(tr, b.hash.slice(0, 16) + "…", "hash");
    cell(tr, b.txs.length);
    cell(tr, utc(b.header.time));
  });
}
function refreshTxs(mempool) {
  const list = mempool.txs.map((t) => ({ t: t, where: "mempool" }));
  for (const b of recentBlocks) for (const t of b.txs) list.push({ t: t, where: "block " + b.height });
  rows("txs", list.slice(0, 12), (tr, x) => {
    cell(tr, x.t.id.slice(0, 16) + "…", "hash");
    cell(tr, x.t.from.slice(0, 14) + "… → " + x.t.to.slice(0, 14) + "…", "hash");
    cell(tr, x.t.amount_text);
    cell(tr, x.t.fee_text);
    cell(tr, x.where);
  });
}
function syncText(s) {
  const y = s.sync;
  if (!y || y.blocks_left === 0) return "in sync";
  let t = y.progress_pct.toFixed(1) + " % of " + y.target_height + " (" + y.target_from + "), " +
    y.blocks_left + " blocks to go";
  if (y.bytes_left !== null && y.rate_bytes_per_s !== null) {
    t += ", about " + bytes(y.bytes_left) + " at " + bytes(y.rate_bytes_per_s) + "/s (" +
      y.rate_from + "): " + dur(y.seconds_left) + " left";
  }
  return t;
}
async function refresh() {
  const s = await get("/api/status");
  $("network").textContent = s.network;
  $("height").textContent = s.height;
  $("header-height").textContent = s.header_height;
  if (firstHeight === null) firstHeight = s.height;
  $("height").dataset.first = firstHeight;
  $("sync-bar").value = s.sync ? s.sync.progress_pct : 100;
  $("sync").textContent = syncText(s);
  $("tip").textContent = s.tip;
  $("mempool").textContent = s.mempool + " transaction(s)";
  $("callsign").textContent = s.callsign + " · skywave " + s.version;
  const traffic = {};
  for (const p of s.peers) {
    const t = (traffic[p.link] = traffic[p.link] || { i: 0, o: 0 });
    t.i += p.stats.bytes_in;
    t.o += p.stats.bytes_out;
  }
  const radio = {};
  for (const r of s.radio || []) radio[r.link] = r;
  rows("links", s.links, (tr, l) => {
    cell(tr, l.url, "hash");
    cell(tr, l.state, l.state);
    cell(tr, l.error, "error");
    cell(tr, l.next_retry);
    const t = traffic[l.id] || { i: 0, o: 0 };
    cell(tr, bytes(t.i) + " / " + bytes(t.o));
    const r = radio[l.id];
    let air = "";
    if (r) {
      air = dur(r.air_ms / 1000) + " on air, duty " + r.duty_cycle_pct + " %";
      if (r.duty_budget_ms !== null) {
        air += ", budget " + dur(r.duty_budget_ms / 1000) + " of " + dur(r.duty_budget_max_ms / 1000);
      }
    }
    cell(tr, air);
  });
  rows("peers", s.peers, (tr, p) => {
    cell(tr, p.callsign ? p.callsign + " (" + p.remote + ")" : p.remote);
    cell(tr, p.height);
    cell(tr, p.score);
    cell(tr, ago(p.idle_ms));
    cell(tr, p.ready ? "ready" : "handshaking");
  });
  const ob = await get("/api/outbox");
  const counts = {};
  for (const it of ob.items) counts[it.state] = (counts[it.state] || 0) + 1;
  const oldest = ob.items.reduce((a, b) => (a && a.created_ms <= b.created_ms ? a : b), null);
  $("outbox-counts").textContent = ob.items.length
    ? Object.entries(counts).map(([k, v]) => v + " " + k).join(", ") +
      (oldest ? " · oldest: #" + oldest.id + " (" + oldest.kind + " to " + oldest.dest_name + ")" : "")
    : "empty";
  rows("outbox", ob.items, (tr, it) => {
    cell(tr, it.id);
    cell(tr, it.kind);
    cell(tr, it.dest_name).title = it.dest;
    cell(tr, it.state);
    cell(tr, it.attempts);
    const td = cell(tr, "");
    for (const cmd of ["hold", "release", "drop"]) {
      const b = document.createElement("button");
      b.textContent = cmd;
      b.onclick = () => act("/api/outbox/" + it.id + "/" + cmd, null);
      td.appendChild(b);
    }
  });
  if (shownTip !== s.tip) {
    shownTip = s.tip;
    await refreshBlocks(s.height);
  }
  refreshTxs(await get("/api/mempool"));
}
async function act(path, body) {
  const token = $("token").value.trim();
  sessionStorage.setItem("skywave-token", token);
  const r = await fetch(path, {
    method: "POST",
    headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
    body: body === null ? "" : body,
  });
  let answer = await r.text();
  $("action-result").textContent = (r.ok ? "done: " : "refused (HTTP " + r.status + "): ") + answer;
  update("action");
}
$("token").value = sessionStorage.getItem("skywave-token") || "";
$("submit-tx").onclick = () => act("/api/tx", $("tx").value);
// Live updates. `data-live` on <body> says how the page follows the node ("events",
// "polling" or "connecting") and `data-cause` what led to the last redraw.
const POLL_MS = 2000;
const RETRY_MAX_MS = 30000;
let mode = "connecting";
let pollTimer = null;
let retryMs = 2000;
function setMode(m) {
  mode = m;
  document.body.dataset.live = m;
  if (m === "events") {
    if (pollTimer !== null) clearInterval(pollTimer);
    pollTimer = null;
  } else if (pollTimer === null) {
    pollTimer = setInterval(() => update("poll"), POLL_MS);
  }
}
// One redraw at a time; what asks meanwhile gets one more redraw after it.
let busy = false;
let again = null;
async function update(cause) {
  if (busy) { again = cause; return; }
  busy = true;
  try {
    await refresh();
    document.body.dataset.cause = cause;
    $("live").textContent = (mode === "events" ? "live" : mode) + ", updated " +
      new Date().toLocaleTimeString();
  } catch (e) {
    $("live").textContent = "node not answering: " + e.message;
  } finally {
    busy = false;
    if (again !== null) { const c = again; again = null; update(c); }
  }
}
function connect() {
  if (typeof EventSource === "undefined") { setMode("polling"); return; }
  const es = new EventSource("/api/events");
  es.onopen = () => { retryMs = 2000; setMode("events"); update("open"); };
  for (const name of ["tip", "tx", "peers", "links", "outbox", "lagged"]) {
    es.addEventListener(name, () => update("event " + name));
  }
  es.onerror = () => {
    setMode("polling");
    // CONNECTING: the browser reconnects by itself (the node restarted). CLOSED: it gave
    // up (the node refused the stream, e.g. too many open): try again later.
    if (es.readyState === EventSource.CLOSED) {
      setTimeout(connect, retryMs);
      retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
    }
  };
}
document.body.dataset.live = mode;
update("load");
connect();
