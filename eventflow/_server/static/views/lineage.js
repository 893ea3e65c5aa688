// Lineage: datasets and the flows that read and write them, left to right; late datasets
// and everything downstream of them (affected) marked by text as well as colour.
import { h, s, patch } from "../dom.js";
import { api } from "../api.js";
import { textWidth } from "../graph.js";

export const LINEAGE_STATES = {
  late: { label: "LATE", color: "#e03131" },
  affected: { label: "AFFECTED", color: "#f08c00" },
  fresh: { label: "fresh", color: "#2f9e44" },
  unmonitored: { label: "no expectation", color: "#868e96" },
  ok: { label: "ok", color: "#1c7ed6" },
};

export function runsHref(flow) {
  return `#/runs?flow=${encodeURIComponent(flow)}`;
}

export function age(seconds, kind) {
  if (seconds === null || seconds === undefined) return kind === "table" ? "no write yet" : "no event yet";
  if (seconds < 120) return `${Math.round(seconds)} s old`;
  if (seconds < 7200) return `${Math.round(seconds / 60)} min old`;
  return `${Math.round(seconds / 3600)} h old`;
}

function datasetStatus(d) {
  const state = LINEAGE_STATES[d.state].label;
  if (d.state === "late") return `${state} by ${Math.round(d.late_by_seconds)} s · ${age(d.age_seconds, d.kind)}`;
  return `${state} · ${age(d.age_seconds, d.kind)}`;
}

function flowStatus(f) {
  return f.state === "affected" ? "AFFECTED · open runs" : "ok · open runs";
}

// Each node's column: one more than its deepest upstream node (a cycle stops the walk).
function columnsOf(nodes, upstream) {
  const depth = new Map();
  const visiting = new Set();
  const walk = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0;
    visiting.add(id);
    const d = Math.max(-1, ...(upstream.get(id) || []).map(walk)) + 1;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  nodes.forEach((n) => walk(n.id));
  return depth;
}

export function lineageGraph(graph) {
  const nodes = [
    ...graph.datasets.map((d) => ({ id: `d:${d.name}`, kind: "dataset", name: d.name, state: d.state, status: datasetStatus(d) })),
    ...graph.flows.map((f) => ({ id: `f:${f.name}`, kind: "flow", name: f.name, state: f.state, status: flowStatus(f) })),
  ];
  if (!nodes.length) return h("p", { class: "muted", id: "lineage-empty" }, "No dataset is declared yet: a worker declares its subscriptions' when it starts.");
  const upstream = new Map();
  const links = graph.edges.map((e) => e.direction === "reads"
    ? { from: `d:${e.dataset}`, to: `f:${e.flow}`, e }
    : { from: `f:${e.flow}`, to: `d:${e.dataset}`, e });
  for (const l of links) (upstream.get(l.to) || upstream.set(l.to, []).get(l.to)).push(l.from);
  const depth = columnsOf(nodes, upstream);
  const family = getComputedStyle(document.body).fontFamily;
  const H = 42, GX = 60, GY = 16, PAD = 12;
  const W = Math.ceil(Math.max(160, ...nodes.map((n) => Math.max(
    textWidth(n.name, `600 12px ${family}`), textWidth(n.status, `400 11px ${family}`)) + 24)));
  const columns = [];
  for (const n of nodes) (columns[depth.get(n.id)] = columns[depth.get(n.id)] || []).push(n);
  const tallest = Math.max(...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + tallest * H + (tallest - 1) * GY;
  const pos = new Map();
  columns.forEach((column, c) => {
    if (!column) return;
    column.sort((a, b) => a.name.localeCompare(b.name));
    const offset = (height - (column.length * H + (column.length - 1) * GY)) / 2;
    column.forEach((n, i) => pos.set(n.id, { x: PAD + c * (W + GX), y: offset + i * (H + GY) }));
  });
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GX;
  const svg = s("svg", { id: "lineage-graph", width, height, viewBox: `0 0 ${width} ${height}` },
    s("defs", {}, s("marker", { id: "lineage-arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a93a8" }))));
  for (const l of links) {
    const a = pos.get(l.from), b = pos.get(l.to);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    svg.append(s("path", {
      class: `edge ${l.e.direction}`, d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
      "marker-end": "url(#lineage-arrow)", "data-flow": l.e.flow, "data-dataset": l.e.dataset, "data-direction": l.e.direction,
    }));
  }
  for (const n of nodes) {
    const p = pos.get(n.id);
    const style = LINEAGE_STATES[n.state];
    const box = [
      s("title", {}, `${n.kind} ${n.name}: ${n.status}`),
      s("rect", { width: W, height: H, rx: n.kind === "flow" ? 6 : 16, fill: style.color, class: n.kind }),
      s("text", { x: 12, y: 17, class: "node-name" }, n.name),
      s("text", { x: 12, y: 33, class: "node-status" }, n.status),
    ];
    const attrs = {
      class: `node lineage-${n.kind} ${n.state}`, "data-key": n.id, "data-name": n.name, "data-kind": n.kind,
      "data-state": n.state, transform: `translate(${p.x},${p.y})`, "aria-label": `${n.kind} ${n.name}: ${n.status}`,
    };
    svg.append(n.kind === "flow" ? s("a", { ...attrs, href: runsHref(n.name) }, ...box) : s("g", attrs, ...box));
  }
  return svg;
}

function stateText(state) {
  const style = LINEAGE_STATES[state];
  return h("span", { class: `badge lineage-state ${state}`, style: `background:${style.color}` }, style.label);
}

export function lateList(graph, id) {
  if (!graph.late.length) return h("p", { class: "muted", id: `${id}-none` }, "Nothing is late.");
  return h("ul", { id, class: "late-list" }, graph.late.map((l) => h("li", { "data-key": l.dataset, "data-dataset": l.dataset },
    stateText("late"), " ", h("strong", {}, l.dataset), " affects ",
    l.affected_flows.length ? l.affected_flows.flatMap((f, i) => [i ? ", " : "", h("a", { href: runsHref(f), "data-flow": f }, f)]) : "no flow")));
}

export class LineageView {
  constructor(root) {
    this.late = h("div", { id: "lineage-late" });
    this.graph = h("div", { class: "graph-scroll", id: "lineage-graph-box" });
    this.table = h("tbody", { id: "lineage-datasets" });
    this.flows = h("tbody", { id: "lineage-flows" });
    root.append(h("h1", {}, "Lineage"),
      h("div", { class: "panel" }, h("h2", {}, "Late"), this.late),
      h("div", { class: "panel" }, h("h2", {}, "Datasets and flows"), this.graph),
      h("div", { class: "panel" }, h("h2", {}, "Datasets"), h("table", {}, h("thead", {}, h("tr", {},
        ["Dataset", "State", "Age", "Expected within", "Written by", "Read by"].map((t) => h("th", {}, t)))), this.table)),
      h("div", { class: "panel" }, h("h2", {}, "Flows"), h("table", {}, h("thead", {}, h("tr", {},
        ["Flow", "State", "Reads", "Writes", "Late upstream"].map((t) => h("th", {}, t)))), this.flows)));
  }

  async refresh() {
    const graph = await api("/api/lineage");
    const flowLinks = (names) => (names.length ? names.flatMap((f, i) => [i ? ", " : "", h("a", { href: runsHref(f) }, f)]) : "–");
    patch(this.late, lateList(graph, "lineage-late-list"));
    patch(this.graph, lineageGraph(graph));
    patch(this.table, graph.datasets.map((d) => h("tr", { "data-key": d.name, "data-dataset": d.name, "data-state": d.state },
      h("td", { class: "mono" }, d.name),
      h("td", { class: "state" }, stateText(d.state)),
      h("td", {}, age(d.age_seconds, d.kind)),
      h("td", {}, d.expect_seconds ? `${d.expect_seconds} s` : "–"),
      h("td", {}, flowLinks(d.writers)),
      h("td", {}, flowLinks(d.readers)))));
    patch(this.flows, graph.flows.map((f) => h("tr", { "data-key": f.name, "data-flow": f.name, "data-state": f.state },
      h("td", {}, h("a", { href: runsHref(f.name) }, f.name)),
      h("td", { class: "state" }, stateText(f.state)),
      h("td", { class: "mono" }, f.reads.join(", ") || "–"),
      h("td", { class: "mono" }, f.writes.join(", ") || "–"),
      h("td", { class: "mono" }, f.affected_by.join(", ") || "–"))));
  }
}
