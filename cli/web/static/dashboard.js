// pythagoras-node dashboard: renders the snapshots the server pushes (server-sent events).
// Every text from the swarm goes in with textContent, never as HTML.
"use strict";

const KEEP = 15 * 60;  // seconds of samples plotted
let samples = [];
let fields = [];
let lastMessage = 0;
const charts = {};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "style") node.style.cssText = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
}

function count(n) {
  if (n === null || n === undefined) return "–";
  return n.toLocaleString("en-US");
}

function pct(x) { return x === null || x === undefined ? "–" : (100 * x).toFixed(0) + " %"; }

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return s.toFixed(0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min" + (Math.round(s % 60) ? " " + Math.round(s % 60) + " s" : "");
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function ago(t, now) { return t ? duration(Math.max(0, now - t)) + " ago" : ""; }

function meter(part, whole) {
  const share = whole ? Math.min(1, part / whole) : 0;
  return el("span", {class: "meter"}, el("span", {style: `width:${(100 * share).toFixed(1)}%`}));
}

function renderNodes(snap) {
  const box = document.getElementById("nodes");
  const tiles = snap.nodes.map(n => {
    const rows = [];
    const add = (k, ...v) => rows.push(el("dt", {}, k), el("dd", {}, ...v));
    if (n.state !== "left" && n.state !== "lost") {
      add("workers", meter(n.busy, n.workers), `${n.busy} of ${n.workers} busy`);
      if (n.held) add("holds", n.held);
      add("results", `${count(n.results)} · ${bytes(n.bytes)}`);
      add("copies missing", count(n.missing));
      if (n.hit_rate !== null) add("served from store", pct(n.hit_rate));
      for (const c of n.callers) add(c.who, `${c.queued} queued · ${c.running} running · ${c.done} done`);
    } else {
      add("since", ago(n.since, snap.t));
    }
    const since = n.state === "paused" && n.since ? ` (${ago(n.since, snap.t)})` : "";
    return el("div", {class: "node", "data-node": n.id, "data-hostname": n.hostname, "data-state": n.state},
      el("div", {}, el("span", {class: "name"}, n.hostname), n.self ? el("span", {class: "owner"}, "(this node)") : null,
        n.owner ? el("span", {class: "owner"}, n.owner) : null),
      el("div", {}, el("span", {class: "state"}, n.state), " ", el("span", {class: "why"}, n.why + since)),
      el("div", {class: "address muted"}, n.address),
      el("dl", {}, ...rows));
  });
  box.replaceChildren(...tiles);
  const states = {};
  for (const n of snap.nodes) states[n.state] = (states[n.state] || 0) + 1;
  document.getElementById("summary").textContent =
    Object.entries(states).map(([s, k]) => `${k} ${s}`).join(" · ");
}

function renderRuns(snap) {
  const box = document.getElementById("runs");
  if (!snap.runs.length) { box.replaceChildren(el("p", {class: "muted"}, "no run in flight")); return; }
  box.replaceChildren(...snap.runs.map(r => {
    const total = r.total || 0;
    const ok = total ? (r.done - r.failed) / total : 0;
    const bad = total ? r.failed / total : 0;
    const text = [total ? `${count(r.done)} / ${count(total)}` : `${count(r.done)} done`];
    if (r.failed) text.push(`${count(r.failed)} failed`);
    if (r.ended) text.push("finished");
    else if (r.eta !== null) text.push(`ETA ${duration(r.eta)}`);
    if (r.rate) text.push(`${r.rate.toFixed(1)}/s`);
    return el("div", {class: "run", "data-run": r.run, "data-function": r.function, "data-done": r.done,
                      "data-total": total, "data-failed": r.failed, "data-ended": String(r.ended)},
      el("div", {}, el("div", {}, r.function), el("div", {class: "who"}, r.who || r.caller)),
      el("div", {class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": total, "aria-valuenow": r.done},
        el("span", {class: "fill", style: `width:${(100 * ok).toFixed(2)}%`}),
        el("span", {class: "failed", style: `width:${(100 * bad).toFixed(2)}%`})),
      el("div", {class: "numbers"}, text.join(" · ")));
  }));
}

function renderCache(snap) {
  const c = snap.cache;
  document.getElementById("cache-summary").textContent =
    `hit rate ${pct(c.hit_rate)} over the last ${duration(c.window_s)} (${count(c.calls)} calls) · ` +
    `${count(c.results)} results, ${bytes(c.bytes)} on the nodes (copies included)`;
  document.querySelector("#functions tbody").replaceChildren(...c.functions.map(f =>
    el("tr", {}, el("td", {}, f.function), el("td", {}, count(f.results)), el("td", {}, bytes(f.bytes)))));
}

function renderReplication(snap) {
  const r = snap.replication;
  const parts = [`${r.replicas} cop${r.replicas === 1 ? "y" : "ies"} of each result`,
                 r.under_replicated ? `${count(r.under_replicated)} copies missing (repairing)` : "no copy missing",
                 r.settled ? "settled" : "not settled yet"];
  if (r.late_acks) parts.push(`${count(r.late_acks)} answered with one copy`);
  document.getElementById("replication").textContent = parts.join(" · ");
  document.getElementById("handovers").replaceChildren(...r.handovers.map(h =>
    el("li", {}, `${h.hostname || h.id}: hand-over ${h.handover}`)));
}

function renderFailures(snap) {
  const box = document.getElementById("failures");
  if (!snap.failures.length) { box.replaceChildren(el("p", {class: "muted"}, "no call failed lately")); return; }
  box.replaceChildren(...snap.failures.map(f => el("details", {class: "failure"},
    el("summary", {}, `${f.call}: ${f.error}: ${f.message} `, el("span", {class: "muted"}, `on ${f.where || f.node}, ${ago(f.t, snap.t)}`)),
    el("pre", {}, f.traceback || f.message))));
}

function seriesData() {
  const at = name => fields.indexOf(name);
  const [t, calls, hits, busy, workers] = ["t", "calls", "hits", "busy", "workers"].map(at);
  const xs = [], perSecond = [], busyWorkers = [], allWorkers = [], hitRate = [];
  let windowHits = 0, windowCalls = 0, start = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i];
    const dt = i ? Math.max(0.1, s[t] - samples[i - 1][t]) : 1;
    windowHits += s[hits]; windowCalls += s[calls];
    while (samples[start][t] < s[t] - 60) { windowHits -= samples[start][hits]; windowCalls -= samples[start][calls]; start++; }
    xs.push(s[t]); perSecond.push(s[calls] / dt); busyWorkers.push(s[busy]); allWorkers.push(s[workers]);
    hitRate.push(windowCalls ? 100 * windowHits / windowCalls : null);
  }
  return {xs, perSecond, busyWorkers, allWorkers, hitRate};
}

function chart(id, series, yRange) {
  const target = document.getElementById(id);
  const opts = {
    width: Math.max(200, target.clientWidth), height: 130, legend: {show: false}, cursor: {show: false},
    scales: {x: {time: true}, y: yRange ? {range: yRange} : {auto: true, range: (u, lo, hi) => [0, Math.max(1, hi * 1.1)]}},
    axes: [{size: 24, font: "11px system-ui"}, {size: 40, font: "11px system-ui"}],
    series: [{}, ...series.map(s => ({points: {show: false}, width: 1.5, ...s}))],
  };
  return new uPlot(opts, [[], ...series.map(() => [])], target);
}

function renderPlots() {
  if (typeof uPlot === "undefined" || !fields.length) return;
  if (!charts.calls) {
    charts.calls = chart("plot-calls", [{label: "calls/s", stroke: "#2f6fde", fill: "rgba(47,111,222,.12)"}]);
    charts.busy = chart("plot-busy", [{label: "busy", stroke: "#1a7f37", fill: "rgba(26,127,55,.12)"},
                                      {label: "workers", stroke: "#9ca3af", dash: [4, 4]}]);
    charts.hits = chart("plot-hits", [{label: "hit rate %", stroke: "#b7791f"}], [0, 100]);
  }
  const d = seriesData();
  charts.calls.setData([d.xs, d.perSecond]);
  charts.busy.setData([d.xs, d.busyWorkers, d.allWorkers]);
  charts.hits.setData([d.xs, d.hitRate]);
}

function render(snap) {
  lastMessage = Date.now();
  const problem = document.getElementById("problem");
  problem.hidden = !snap.problem;
  problem.textContent = snap.problem || "";
  if (snap.problem) return;
  document.getElementById("swarm").textContent = snap.swarm || "";
  document.title = `swarm ${snap.swarm} · ${snap.nodes.length} nodes`;
  if (snap.series) {
    fields = snap.series.fields || fields;
    samples = snap.reset ? snap.series.samples.slice() : samples.concat(snap.series.samples);
    const oldest = samples.length ? samples[samples.length - 1][0] - KEEP : 0;
    while (samples.length && samples[0][0] < oldest) samples.shift();
  }
  renderNodes(snap);
  renderRuns(snap);
  renderCache(snap);
  renderReplication(snap);
  renderFailures(snap);
  renderPlots();
}

const source = new EventSource("/events");
source.onmessage = e => render(JSON.parse(e.data));
source.onerror = () => { document.getElementById("freshness").textContent = "reconnecting…"; };
setInterval(() => {
  const age = (Date.now() - lastMessage) / 1000;
  const fresh = document.getElementById("freshness");
  fresh.textContent = lastMessage ? (age < 3 ? "live" : `no update for ${age.toFixed(0)} s`) : "connecting…";
  fresh.dataset.live = String(lastMessage > 0 && age < 3);
}, 1000);
window.addEventListener("resize", () => {
  for (const c of Object.values(charts)) c.setSize({width: Math.max(200, c.root.parentNode.clientWidth), height: 130});
});
