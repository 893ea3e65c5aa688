// SVG charts: throughput and failure rate per bucket, sparklines, event rates, durations.
import { h, s } from "./dom.js";
import { shortId, fmtDuration, fmtRate } from "./format.js";
import { STATE_COLORS } from "./states.js";

export const CHART_W = 560, CHART_H = 180, CHART_L = 44, CHART_B = 22;

export function chartFrame(id, history, yMax, yLabel) {
  const svg = s("svg", { id, class: "chart", width: CHART_W, height: CHART_H, viewBox: `0 0 ${CHART_W} ${CHART_H}` });
  const plotH = CHART_H - CHART_B - 8;
  for (let i = 0; i <= 4; i++) {
    const y = 8 + plotH - (plotH * i) / 4;
    svg.append(s("line", { class: "axis", x1: CHART_L, x2: CHART_W, y1: y, y2: y }),
      s("text", { class: "tick", x: CHART_L - 4, y: y + 4, "text-anchor": "end" }, yLabel((yMax * i) / 4)));
  }
  const n = history.buckets.length;
  const labelEvery = Math.max(1, Math.ceil(n / 6));
  history.buckets.forEach((b, i) => {
    if (i % labelEvery) return;
    const x = CHART_L + ((CHART_W - CHART_L) * i) / n;
    svg.append(s("text", { class: "tick", x, y: CHART_H - 6 }, new Date(b.start).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  });
  return { svg, plotH };
}

export function throughputChart(history, id = "throughput-chart", noun = "ended") {
  const n = history.buckets.length || 1;
  const highest = Math.max(1, ...history.buckets.map((b) => b.total));
  const peak = highest <= 4 ? 4 : Math.ceil(highest / 4) * 4; // round ticks
  const { svg, plotH } = chartFrame(id, history, peak, (v) => (Number.isInteger(v) ? v : v.toFixed(1)));
  const bw = (CHART_W - CHART_L) / n;
  history.buckets.forEach((b, i) => {
    let y = 8 + plotH;
    for (const st of ["COMPLETED", "CANCELLED", "CRASHED", "FAILED", "RETRYING", "RUNNING", "PENDING"]) {
      const count = b.counts[st] || 0;
      if (!count) continue;
      const hgt = (count / peak) * plotH;
      y -= hgt;
      svg.append(s("rect", { class: "bar", x: CHART_L + i * bw + 1, y, width: Math.max(1, bw - 2), height: hgt, fill: STATE_COLORS[st] },
        s("title", {}, `${new Date(b.start).toLocaleString()}: ${count} ${st.toLowerCase()} (${b.throughput_per_second.toFixed(2)} runs/s in all)`)));
    }
  });
  const total = history.buckets.reduce((a, b) => a + b.total, 0);
  return h("div", {}, svg, h("div", { class: "legend" }, `${total} runs ${noun} in range, peak ${(highest / history.bucket_seconds).toFixed(2)} runs/s`));
}

export function failureChart(history, id = "failure-chart") {
  const { svg, plotH } = chartFrame(id, history, 1, (v) => `${Math.round(v * 100)}%`);
  const n = history.buckets.length || 1;
  const bw = (CHART_W - CHART_L) / n;
  const points = history.buckets
    .map((b, i) => (b.failure_rate === null ? null : [CHART_L + i * bw + bw / 2, 8 + plotH - b.failure_rate * plotH, b]))
    .filter(Boolean);
  if (points.length) {
    svg.append(s("polyline", { points: points.map(([x, y]) => `${x},${y}`).join(" "), fill: "none", stroke: STATE_COLORS.FAILED, "stroke-width": 2 }));
    for (const [x, y, b] of points) {
      svg.append(s("circle", { class: "point", cx: x, cy: y, r: 3, fill: STATE_COLORS.FAILED },
        s("title", {}, `${new Date(b.start).toLocaleString()}: ${Math.round(b.failure_rate * 100)}% of ${b.total}`)));
    }
  }
  return svg;
}

export function sparkline(values, failed) {
  const W = 120, H = 26, top = Math.max(1, ...values);
  const bw = W / Math.max(1, values.length);
  return s("svg", { class: "sparkline", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" },
    values.map((v, i) => (v ? s("rect", { x: i * bw, y: H - (v / top) * H, width: Math.max(1, bw - 0.5), height: (v / top) * H,
      fill: failed ? STATE_COLORS.FAILED : STATE_COLORS.COMPLETED }) : null)));
}

export function rateChart(sub) {
  const values = sub.throughput;
  const since = new Date(sub.since).getTime();
  const history = {
    bucket_seconds: sub.bucket_seconds,
    buckets: values.map((v, i) => ({ start: new Date(Math.floor(since / 1000 / sub.bucket_seconds) * sub.bucket_seconds * 1000 + i * sub.bucket_seconds * 1000).toISOString() })),
  };
  const highest = Math.max(...values, 0);
  const peak = highest > 0 ? highest * 1.1 : 1;
  const { svg, plotH } = chartFrame("sub-throughput", history, peak, (v) => fmtRate(v));
  const bw = (CHART_W - CHART_L) / Math.max(1, values.length);
  values.forEach((v, i) => {
    if (!v) return;
    const hgt = (v / peak) * plotH;
    svg.append(s("rect", { class: "bar", x: CHART_L + i * bw + 1, y: 8 + plotH - hgt, width: Math.max(1, bw - 2), height: hgt, fill: STATE_COLORS.RUNNING },
      s("title", {}, `${new Date(history.buckets[i].start).toLocaleTimeString()}: ${fmtRate(v)} events/s`)));
  });
  return svg;
}

// Each run's duration at the time it was created, coloured by state (a failure is also a cross).
export function durationScatter(runs, from, to) {
  const points = runs.filter((r) => r.duration_seconds !== null && r.duration_seconds !== undefined);
  if (!points.length) return h("p", { class: "muted", id: "duration-empty" }, "No finished run in this range.");
  const W = CHART_W * 2, H = CHART_H, L = CHART_L + 14, B = CHART_B, plotH = H - B - 8;
  const top = Math.max(...points.map((r) => r.duration_seconds)) * 1.1 || 1;
  const svg = s("svg", { id: "duration-chart", class: "chart", width: "100%", height: H, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  for (let i = 0; i <= 4; i++) {
    const y = 8 + plotH - (plotH * i) / 4;
    svg.append(s("line", { class: "axis", x1: L, x2: W, y1: y, y2: y }),
      s("text", { class: "tick", x: L - 4, y: y + 4, "text-anchor": "end" }, fmtDuration((top * i) / 4)));
  }
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    svg.append(s("text", { class: "tick", x: L + ((W - L - 10) * i) / 4, y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
      new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })));
  }
  for (const r of points) {
    const x = L + ((new Date(r.created_at).getTime() - from) / Math.max(1, to - from)) * (W - L - 10);
    const y = 8 + plotH - (r.duration_seconds / top) * plotH;
    const failed = r.state_type === "FAILED" || r.state_type === "CRASHED";
    const label = s("title", {}, `${r.name || shortId(r.id)}: ${fmtDuration(r.duration_seconds)}, ${r.state_name}`);
    const mark = failed
      ? s("path", { class: "point failed", d: `M ${x - 4} ${y - 4} L ${x + 4} ${y + 4} M ${x - 4} ${y + 4} L ${x + 4} ${y - 4}`, stroke: STATE_COLORS[r.state_type], "stroke-width": 2, "data-key": r.id }, label)
      : s("circle", { class: "point", cx: x, cy: y, r: 3.5, fill: STATE_COLORS[r.state_type] || "#adb5bd", "data-key": r.id }, label);
    mark.onclick = () => { location.hash = `#/runs/${r.id}`; };
    svg.append(mark);
  }
  return svg;
}
