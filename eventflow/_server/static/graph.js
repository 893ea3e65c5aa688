// A run's task graph (layered, left to right) and its timeline.
import { h, s } from "./dom.js";
import { fmtDuration, runDuration } from "./format.js";
import { STATE_COLORS } from "./states.js";

// A layered layout: a task's layer is one more than its deepest upstream task.
export function layers(taskRuns, edges) {
  const upstream = new Map(taskRuns.map((t) => [t.id, []]));
  for (const e of edges) {
    if (upstream.has(e.downstream_id) && upstream.has(e.upstream_id)) upstream.get(e.downstream_id).push(e.upstream_id);
  }
  const layer = new Map();
  const visiting = new Set();
  const depth = (id) => {
    if (layer.has(id)) return layer.get(id);
    if (visiting.has(id)) return 0; // a cycle cannot happen; never loop if it does
    visiting.add(id);
    const d = Math.max(-1, ...upstream.get(id).map(depth)) + 1;
    visiting.delete(id);
    layer.set(id, d);
    return d;
  };
  taskRuns.forEach((t) => depth(t.id));
  return layer;
}

let measureContext = null;

// The width a label takes in the page's font, so a box can be made to fit it.
export function textWidth(text, font) {
  measureContext = measureContext || document.createElement("canvas").getContext("2d");
  measureContext.font = font;
  return measureContext.measureText(text).width;
}

export function nodeStatus(t) {
  return `${t.state_name}${t.run_count > 1 ? ` · ${t.run_count} attempts` : ""}`;
}

export function taskGraph(run, selected, onSelect) {
  const H = 40, GX = 70, GY = 18, PAD = 12;
  const family = getComputedStyle(document.body).fontFamily;
  const W = Math.ceil(Math.max(140, ...run.task_runs.map((t) => Math.max(
    textWidth(t.name, `600 12px ${family}`), textWidth(nodeStatus(t), `400 11px ${family}`)) + 24)));
  const tasks = run.task_runs;
  if (!tasks.length) return h("p", { class: "muted", id: "task-graph-empty" }, "This run has no task runs.");
  const layer = layers(tasks, run.edges);
  const columns = [];
  for (const t of tasks) {
    const l = layer.get(t.id);
    (columns[l] = columns[l] || []).push(t);
  }
  const pos = new Map();
  const tallest = Math.max(...columns.map((c) => (c ? c.length : 0)));
  const height = PAD * 2 + tallest * H + (tallest - 1) * GY;
  columns.forEach((column, l) => {
    if (!column) return;
    const offset = (height - (column.length * H + (column.length - 1) * GY)) / 2;
    column.forEach((t, i) => pos.set(t.id, { x: PAD + l * (W + GX), y: offset + i * (H + GY) }));
  });
  const width = PAD * 2 + columns.length * W + (columns.length - 1) * GX;
  const svg = s("svg", { id: "task-graph", width, height, viewBox: `0 0 ${width} ${height}` },
    s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#8a93a8" }))));
  for (const e of run.edges) {
    const a = pos.get(e.upstream_id), b = pos.get(e.downstream_id);
    if (!a || !b) continue;
    const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
    svg.append(s("path", {
      class: `edge ${e.kind}`, d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`,
      "marker-end": "url(#arrow)", "data-upstream": e.upstream_id, "data-downstream": e.downstream_id,
    }));
  }
  for (const t of tasks) {
    const p = pos.get(t.id);
    const g = s("g", {
      class: `node${t.id === selected ? " selected" : ""}`, "data-task-id": t.id, "data-key": t.id,
      "data-state": t.state_type, transform: `translate(${p.x},${p.y})`, tabindex: 0, role: "button",
      "aria-label": `${t.name}: ${nodeStatus(t)}`,
    },
    s("title", {}, `${t.name}: ${t.state_name}, ${t.run_count} attempt(s), ${fmtDuration(runDuration(t))}${t.error ? `\n${t.error}` : ""}`),
    s("rect", { width: W, height: H, rx: 6, fill: STATE_COLORS[t.state_type] || "#adb5bd" }),
    s("text", { x: 12, y: 17, class: "node-name" }, t.name),
    s("text", { x: 12, y: 32, class: "node-status" }, nodeStatus(t)));
    g.onclick = () => onSelect(t.id);
    g.onkeydown = (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onSelect(t.id); } };
    svg.append(g);
  }
  return svg;
}

export function gantt(run) {
  const tasks = run.task_runs;
  if (!tasks.length) return h("p", { class: "muted" }, "No task runs.");
  const LABEL = 170, WIDTH = 720, ROW = 22, TOP = 24, MIN_BAR = 6;
  const ms = (iso) => (iso ? new Date(iso).getTime() : null);
  const start = Math.min(ms(run.started_at) ?? Infinity, ...tasks.map((t) => ms(t.started_at) ?? ms(t.created_at)));
  const ends = tasks.map((t) => ms(t.ended_at) ?? Date.now());
  const end = Math.max(ms(run.ended_at) ?? 0, ...ends, start + 1);
  const span = end - start;
  const x = (t) => LABEL + ((t - start) / span) * WIDTH;
  const height = TOP + tasks.length * ROW + 6;
  const svg = s("svg", { id: "gantt", width: LABEL + WIDTH + 70, height });
  for (let i = 0; i <= 4; i++) {
    const tx = LABEL + (WIDTH * i) / 4;
    svg.append(s("line", { class: "axis", x1: tx, x2: tx, y1: TOP - 6, y2: height }),
      s("text", { class: "tick", x: tx, y: 12, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
        fmtDuration((span * i) / 4 / 1000)));
  }
  tasks.forEach((t, i) => {
    const y = TOP + i * ROW;
    const a = ms(t.started_at) ?? ms(t.created_at), b = ms(t.ended_at) ?? Date.now();
    const left = Math.min(x(a), LABEL + WIDTH - MIN_BAR); // a fast task stays visible
    const duration = t.duration_seconds ?? (b - a) / 1000;
    svg.append(
      s("text", { x: 0, y: y + 14 }, t.name.length > 24 ? `${t.name.slice(0, 23)}…` : t.name),
      s("rect", { class: "bar", x: left, y: y + 3, width: Math.max(MIN_BAR, x(b) - x(a)), height: ROW - 8, rx: 3,
        fill: STATE_COLORS[t.state_type] || "#adb5bd", "data-task-id": t.id },
      s("title", {}, `${t.name}: ${fmtDuration(duration)} (${t.state_name})`)),
      s("text", { class: "tick bar-label", x: left + Math.max(MIN_BAR, x(b) - x(a)) + 4, y: y + 14 }, fmtDuration(duration)));
  });
  return svg;
}
