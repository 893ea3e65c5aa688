// eventflow web UI: plain DOM, no build step. Every view re-reads the API while
// live updates are on (every 1.5 s, paused while the tab is hidden).
"use strict";

const REFRESH_MS = 1500;
const FRESH_MS = 4000; // how long a run that just appeared stays highlighted
const TOKEN_KEY = "eventflow-token";
const FINAL = new Set(["COMPLETED", "FAILED", "CRASHED", "CANCELLED"]);
const REPLAYABLE = new Set(["FAILED", "CRASHED", "CANCELLED"]);
const STATES = ["PENDING", "RUNNING", "RETRYING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"];
const STATE_COLORS = {
  COMPLETED: "#2f9e44", FAILED: "#e03131", CRASHED: "#c2255c", CANCELLED: "#868e96",
  RUNNING: "#1c7ed6", RETRYING: "#f08c00", PENDING: "#adb5bd",
};
const RANGES = { "15m": 900, "1h": 3600, "6h": 21600, "24h": 86400, "7d": 604800, "30d": 2592000 };
const SVG_NS = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------- DOM helpers

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function badge(state, label) {
  return h("span", { class: `badge ${state}` }, label || state);
}

function shortId(id) {
  return id ? id.slice(-8) : "";
}

function fmtTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString();
}

function ago(iso) {
  if (!iso) return "–";
  const seconds = (Date.now() - new Date(iso).getTime()) / 1000;
  if (seconds < 2) return "just now";
  if (seconds < 60) return `${Math.round(seconds)} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return `${Math.round(seconds / 86400)} d ago`;
}

function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 0.01) return `${(seconds * 1000).toFixed(1)} ms`;
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 120) return `${seconds.toFixed(2)} s`;
  return `${Math.round(seconds / 60)} min`;
}

function runDuration(run) {
  if (run.duration_seconds !== undefined && run.duration_seconds !== null) return run.duration_seconds;
  if (!run.started_at) return null;
  const end = run.ended_at ? new Date(run.ended_at) : new Date();
  return (end - new Date(run.started_at)) / 1000;
}

function pretty(value) {
  return typeof value === "string" ? value : JSON.stringify(value, null, 2);
}

// ---------------------------------------------------------------- API client

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...(options.headers || {}) };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: options.method || "GET",
    headers,
    body: options.body === undefined ? undefined : JSON.stringify(options.body),
  });
  if (response.status === 401) {
    askForToken();
    throw new Unauthorized("a token is needed");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : response.statusText;
    const error = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    error.status = response.status;
    throw error;
  }
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") q.set(k, v);
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

function askForToken() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) dialog.showModal();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("token-form").addEventListener("submit", () => {
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value);
    route();
  });
});

// ---------------------------------------------------------------- live refresh

const live = { paused: false, view: null, timer: null, busy: false, again: false };

function setStatus(kind, text) {
  const el = document.getElementById("live-status");
  el.className = `live-status ${kind}`;
  el.textContent = text;
}

async function tick() {
  if (live.busy) {
    live.again = true; // a filter changed mid-refresh: refresh once more right after
    return;
  }
  if (!live.view || document.hidden) return;
  live.busy = true;
  const view = live.view;
  try {
    await view.refresh();
    if (view === live.view) {
      setStatus(live.paused ? "paused" : "ok", `${live.paused ? "paused" : "live"} · ${new Date().toLocaleTimeString()}`);
    }
  } catch (error) {
    if (error instanceof Unauthorized) setStatus("error", "token needed");
    else setStatus("error", `error: ${error.message}`);
  } finally {
    live.busy = false;
    if (live.again) {
      live.again = false;
      tick();
    }
  }
}

function startLive() {
  clearInterval(live.timer);
  live.timer = live.paused ? null : setInterval(tick, REFRESH_MS);
}

// ---------------------------------------------------------------- router

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(q || "") };
}

function setHashParams(base, params) {
  const text = query(params);
  history.replaceState(null, "", `#/${base}${text}`);
}

async function route() {
  const { parts, params } = parseHash();
  const main = document.getElementById("view");
  main.replaceChildren();
  let view;
  const section = parts[0] || "runs";
  if (section === "runs" && parts[1]) view = new RunView(main, parts[1]);
  else if (section === "flows" && parts[1]) view = new FlowView(main, parts[1]);
  else if (section === "flows") view = new FlowsView(main);
  else if (section === "workers") view = new WorkersView(main);
  else view = new RunsView(main, params);
  for (const a of document.querySelectorAll("[data-nav]")) {
    a.classList.toggle("active", a.dataset.nav === section);
  }
  live.view = view;
  await tick();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  document.getElementById("live-toggle").addEventListener("click", (event) => {
    live.paused = !live.paused;
    event.target.textContent = live.paused ? "Resume" : "Pause";
    setStatus(live.paused ? "paused" : "ok", live.paused ? "paused" : "live");
    startLive();
  });
  startLive();
  route();
});

// ---------------------------------------------------------------- runs list

function rangeSince(range, params) {
  if (range === "custom") return params.since || null;
  const seconds = RANGES[range];
  return seconds ? new Date(Date.now() - seconds * 1000).toISOString() : null;
}

class RunsView {
  constructor(root, params) {
    this.params = {
      flow: params.get("flow") || "",
      state: params.get("state") || "",
      key: params.get("key") || "",
      range: params.get("range") || "all",
      since: params.get("since") || "",
      until: params.get("until") || "",
      offset: Number(params.get("offset") || 0),
    };
    this.limit = 50;
    this.firstSeen = null; // run id -> when it first showed up, to highlight new runs
    this.flowsLoaded = false;
    this.build(root);
  }

  build(root) {
    const p = this.params;
    this.flowSelect = h("select", { id: "filter-flow", name: "flow" }, h("option", { value: "" }, "all flows"));
    this.stateSelect = h(
      "select", { id: "filter-state", name: "state" },
      h("option", { value: "" }, "any state"),
      STATES.map((st) => h("option", { value: st, selected: st === p.state }, st)),
    );
    this.keyInput = h("input", { id: "filter-key", name: "key", placeholder: "event key", value: p.key });
    this.rangeSelect = h(
      "select", { id: "filter-range", name: "range" },
      ["15m", "1h", "6h", "24h", "7d", "30d", "all", "custom"].map((r) =>
        h("option", { value: r, selected: r === p.range }, r === "all" ? "all time" : r === "custom" ? "custom…" : `last ${r}`)),
    );
    this.sinceInput = h("input", { id: "filter-since", type: "datetime-local", step: 1 });
    this.untilInput = h("input", { id: "filter-until", type: "datetime-local", step: 1 });
    if (p.since) this.sinceInput.value = toLocalInput(p.since);
    if (p.until) this.untilInput.value = toLocalInput(p.until);
    this.customBox = h("span", { class: "filters" },
      h("label", {}, "since", this.sinceInput), h("label", {}, "until", this.untilInput));
    this.customBox.hidden = p.range !== "custom";
    const apply = () => this.applyFilters();
    for (const el of [this.flowSelect, this.stateSelect, this.rangeSelect, this.sinceInput, this.untilInput]) {
      el.addEventListener("change", apply);
    }
    this.keyInput.addEventListener("keydown", (e) => { if (e.key === "Enter") apply(); });
    this.keyInput.addEventListener("change", apply);

    this.summary = h("span", { class: "muted", id: "runs-total" });
    this.stateSummary = h("div", { class: "chips", id: "state-summary" });
    this.body = h("tbody", { id: "runs-body" });
    this.prev = h("button", { class: "secondary", id: "page-prev", onclick: () => this.page(-1) }, "← Newer");
    this.next = h("button", { class: "secondary", id: "page-next", onclick: () => this.page(1) }, "Older →");
    root.append(
      h("h1", {}, "Flow runs"),
      h("div", { class: "panel" },
        h("div", { class: "filters" },
          h("label", {}, "flow", this.flowSelect),
          h("label", {}, "state", this.stateSelect),
          h("label", {}, "key", this.keyInput),
          h("label", {}, "time", this.rangeSelect),
          this.customBox,
          h("button", { class: "secondary", id: "filter-clear", onclick: () => { location.hash = "#/runs"; } }, "Clear"),
        )),
      h("div", { class: "panel" },
        this.stateSummary,
        h("table", { id: "runs-table" },
          h("thead", {}, h("tr", {},
            ["State", "Run", "Flow", "Event", "Created", "Duration", "Attempts", "Error"].map((t) => h("th", {}, t)))),
          this.body),
        h("div", { class: "pager" }, this.summary, this.prev, this.next)),
    );
  }

  applyFilters() {
    const p = this.params;
    p.flow = this.flowSelect.value;
    p.state = this.stateSelect.value;
    p.key = this.keyInput.value.trim();
    p.range = this.rangeSelect.value;
    this.customBox.hidden = p.range !== "custom";
    p.since = p.range === "custom" && this.sinceInput.value ? new Date(this.sinceInput.value).toISOString() : "";
    p.until = p.range === "custom" && this.untilInput.value ? new Date(this.untilInput.value).toISOString() : "";
    p.offset = 0;
    this.firstSeen = null;
    this.syncHash();
    tick();
  }

  syncHash() {
    const p = this.params;
    setHashParams("runs", {
      flow: p.flow, state: p.state, key: p.key, range: p.range === "all" ? "" : p.range,
      since: p.since, until: p.until, offset: p.offset || "",
    });
  }

  page(direction) {
    this.params.offset = Math.max(0, this.params.offset + direction * this.limit);
    this.syncHash();
    tick();
  }

  async loadFlows() {
    const flows = await api("/api/flows");
    for (const f of flows) {
      this.flowSelect.append(h("option", { value: f.name, selected: f.name === this.params.flow }, f.name));
    }
    this.flowsLoaded = true;
  }

  async refresh() {
    if (!this.flowsLoaded) await this.loadFlows();
    const p = this.params;
    const page = await api(`/api/flow-runs${query({
      flow: p.flow, state: p.state, key: p.key,
      since: rangeSince(p.range, p), until: p.range === "custom" ? p.until : "",
      limit: this.limit, offset: p.offset,
    })}`);
    const initial = this.firstSeen === null;
    this.firstSeen = this.firstSeen || new Map();
    const now = Date.now();
    for (const run of page.items) {
      if (!this.firstSeen.has(run.id)) this.firstSeen.set(run.id, initial ? 0 : now);
    }
    this.body.replaceChildren(...page.items.map((run) => this.row(run, now - this.firstSeen.get(run.id) < FRESH_MS)));
    if (!page.items.length) {
      this.body.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No flow runs match these filters.")));
    }
    this.stateSummary.replaceChildren(...STATES.filter((st) => page.states[st]).map((st) =>
      h("a", {
        href: "#", "data-state": st, class: p.state === st ? "chosen" : "",
        onclick: (e) => { e.preventDefault(); this.stateSelect.value = p.state === st ? "" : st; this.applyFilters(); },
      }, badge(st, `${st.toLowerCase()} ${page.states[st]}`))));
    const first = page.total ? page.offset + 1 : 0;
    this.summary.textContent = `${first}–${page.offset + page.items.length} of ${page.total}`;
    this.prev.disabled = page.offset === 0;
    this.next.disabled = page.next_offset === null;
  }

  row(run, fresh) {
    const event = run.event_source
      ? `${run.event_key ? `key ${run.event_key} · ` : ""}${run.event_source}${run.event_partition !== null ? `/${run.event_partition}` : ""}${run.event_offset !== null ? `@${run.event_offset}` : ""}`
      : "";
    return h("tr", {
      class: `clickable${fresh ? " fresh" : ""}`, "data-run-id": run.id, "data-state": run.state_type,
      onclick: () => { location.hash = `#/runs/${run.id}`; },
    },
    h("td", {}, badge(run.state_type, run.state_name)),
    h("td", { class: "mono" }, h("a", { href: `#/runs/${run.id}` }, shortId(run.id)), run.retry_of ? h("span", { class: "muted" }, " ↻") : null),
    h("td", {}, run.flow_name, run.name ? h("div", { class: "muted" }, run.name) : null),
    h("td", { class: "mono" }, event),
    h("td", { title: fmtTime(run.created_at) }, ago(run.created_at)),
    h("td", {}, fmtDuration(runDuration(run))),
    h("td", {}, run.run_count),
    h("td", { class: "error", title: run.error || "" }, run.error || ""));
  }
}

function toLocalInput(iso) {
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

// ---------------------------------------------------------------- run detail

class RunView {
  constructor(root, runId) {
    this.runId = runId;
    this.root = root;
    this.selected = null;
    this.signature = null;
  }

  async refresh() {
    let run;
    try {
      run = await api(`/api/flow-runs/${encodeURIComponent(this.runId)}`);
    } catch (error) {
      if (error.status === 404) {
        this.root.replaceChildren(h("div", { class: "notice bad", id: "not-found" }, `No flow run ${this.runId}.`));
        return;
      }
      throw error;
    }
    // re-render only when something changed, so a selection or scroll survives the poll
    const signature = JSON.stringify([run.state_type, run.task_runs.map((t) => [t.state_type, t.run_count, t.ended_at]),
      run.logs.length, run.replays.map((r) => r.state_type), run.ended_at]);
    if (signature === this.signature && FINAL.has(run.state_type)) return;
    this.signature = signature;
    this.render(run);
  }

  render(run) {
    const names = Object.fromEntries(run.task_runs.map((t) => [t.id, t.name]));
    this.notice = h("div", { id: "retry-notice" });
    const retry = REPLAYABLE.has(run.state_type)
      ? h("button", { class: "primary", id: "retry-button", onclick: (e) => this.retry(e.target) }, "Retry")
      : null;
    this.root.replaceChildren();
    append(this.root, [
      h("h1", {},
        h("a", { href: `#/flows/${encodeURIComponent(run.flow_name)}` }, run.flow_name),
        h("span", { class: "mono muted" }, run.id),
        h("span", { id: "run-state" }, badge(run.state_type, run.state_name)),
        retry),
      this.notice,
      h("div", { class: "panel facts" },
        fact("Name", run.name || "–"),
        fact("Created", fmtTime(run.created_at)),
        fact("Started", fmtTime(run.started_at)),
        fact("Ended", fmtTime(run.ended_at)),
        fact("Duration", fmtDuration(runDuration(run))),
        fact("Attempts", run.run_count),
        fact("Worker", run.worker_id || "–"),
        run.retry_of ? fact("Retry of", h("a", { href: `#/runs/${run.retry_of}`, id: "retry-of" }, shortId(run.retry_of))) : null,
        run.linked_run_id ? fact("Linked run", h("a", { href: `#/runs/${run.linked_run_id}`, id: "linked-run" }, shortId(run.linked_run_id))) : null,
        run.parent_flow_run_id ? fact("Parent run", h("a", { href: `#/runs/${run.parent_flow_run_id}` }, shortId(run.parent_flow_run_id))) : null),
      run.error ? h("div", { class: "panel" }, h("h2", {}, "Error"), h("pre", { class: "error-text", id: "run-error" }, run.error)) : null,
      run.replays.length ? h("div", { class: "panel", id: "replays" }, h("h2", {}, "Retries of this run"),
        h("div", { class: "chips" }, run.replays.map((r) =>
          h("a", { href: `#/runs/${r.id}`, class: "replay-link" }, badge(r.state_type, `${r.state_name} · ${shortId(r.id)}`))))) : null,
      h("div", { class: "panel" }, h("h2", {}, `Task graph (${run.task_runs.length} task runs, ${run.edges.length} edges)`),
        h("div", { class: "scroll-x" }, taskGraph(run, (id) => this.select(id))), legend()),
      h("div", { class: "panel" }, h("h2", {}, "Timeline"), h("div", { class: "scroll-x" }, gantt(run))),
      h("div", { class: "panel" }, h("h2", {}, "Task runs"), this.taskTable(run)),
      h("div", { class: "grid2" },
        run.event ? h("div", { class: "panel", id: "event" }, h("h2", {}, "Triggering event"),
          h("div", { class: "facts" },
            fact("Source", run.event.source || "–"),
            fact("Partition", run.event.partition ?? "–"),
            fact("Offset", run.event.offset ?? "–"),
            fact("Key", run.event.key ?? "–"),
            fact("Event id", run.event.id || "–"),
            fact("Event time", fmtTime(run.event.time))),
          h("h2", { style: "margin-top:12px" }, `Payload (${run.event.payload_encoding})`),
          h("pre", { id: "event-payload" }, pretty(run.event.payload))) : null,
        h("div", { class: "panel" }, h("h2", {}, "Parameters"), h("pre", { id: "parameters" }, pretty(run.parameters ?? {})),
          h("h2", { style: "margin-top:12px" }, "Result"), h("pre", { id: "result" }, run.result === null ? "–" : pretty(run.result)))),
      h("div", { class: "panel" }, h("h2", {}, `Logs (${run.logs.length})`), logTable(run.logs, names)),
    ]);
    if (this.selected) this.select(this.selected);
  }

  taskTable(run) {
    return h("table", { id: "task-table" },
      h("thead", {}, h("tr", {}, ["Task run", "State", "Attempts", "Started", "Duration", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, run.task_runs.map((t) => h("tr", { "data-task-id": t.id },
        h("td", {}, t.name),
        h("td", {}, badge(t.state_type, t.state_name)),
        h("td", {}, t.run_count),
        h("td", {}, fmtTime(t.started_at)),
        h("td", {}, fmtDuration(runDuration(t))),
        h("td", { class: "error-text" }, t.error || "")))));
  }

  select(taskId) {
    this.selected = taskId;
    for (const row of this.root.querySelectorAll("[data-task-id]")) {
      row.classList.toggle("selected", row.dataset.taskId === taskId);
    }
  }

  async retry(button) {
    button.disabled = true;
    try {
      const created = await api(`/api/flow-runs/${encodeURIComponent(this.runId)}/retry`, { method: "POST" });
      this.notice.replaceChildren(h("div", { class: "notice" },
        "Retry requested: ", h("a", { href: `#/runs/${created.id}`, id: "retry-link" }, created.id),
        " (pending until a worker running this flow picks it up)."));
      this.signature = null;
    } catch (error) {
      this.notice.replaceChildren(h("div", { class: "notice bad" }, `Retry failed: ${error.message}`));
      button.disabled = false;
    }
  }
}

function fact(label, value) {
  return h("div", {}, h("span", { class: "label" }, label), value);
}

function legend() {
  return h("div", { class: "legend" }, STATES.map((st) => h("span", {}, h("i", { style: `background:${STATE_COLORS[st]}` }), st.toLowerCase())),
    h("span", {}, "- - - wait_for"));
}

function logTable(logs, names) {
  if (!logs.length) return h("p", { class: "muted" }, "No logs.");
  return h("table", { id: "log-table" },
    h("thead", {}, h("tr", {}, ["Time", "Level", "Where", "Message"].map((t) => h("th", {}, t)))),
    h("tbody", {}, logs.map((entry) => h("tr", {},
      h("td", { class: "mono" }, new Date(entry.timestamp).toLocaleTimeString()),
      h("td", { class: entry.level >= 40 ? "error-text" : "" }, entry.level_name),
      h("td", {}, entry.task_run_id ? names[entry.task_run_id] || shortId(entry.task_run_id) : "flow"),
      h("td", { class: "mono" }, entry.message)))));
}

// A layered layout: a task's layer is one more than its deepest upstream task.
function layers(taskRuns, edges) {
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

function taskGraph(run, onSelect) {
  const W = 160, H = 40, GX = 70, GY = 18, PAD = 12;
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
    const label = t.name.length > 20 ? `${t.name.slice(0, 19)}…` : t.name;
    const g = s("g", { class: "node", "data-task-id": t.id, "data-state": t.state_type, transform: `translate(${p.x},${p.y})` },
      s("title", {}, `${t.name}: ${t.state_name}, ${t.run_count} attempt(s), ${fmtDuration(runDuration(t))}${t.error ? `\n${t.error}` : ""}`),
      s("rect", { width: W, height: H, rx: 6, fill: STATE_COLORS[t.state_type] || "#adb5bd" }),
      s("text", { x: 10, y: 17 }, label),
      s("text", { x: 10, y: 32, "font-size": 11, "font-weight": 400 }, `${t.state_name}${t.run_count > 1 ? ` · ${t.run_count} attempts` : ""}`));
    g.addEventListener("click", () => onSelect(t.id));
    svg.append(g);
  }
  return svg;
}

function gantt(run) {
  const tasks = run.task_runs;
  if (!tasks.length) return h("p", { class: "muted" }, "No task runs.");
  const LABEL = 170, WIDTH = 720, ROW = 22, TOP = 24;
  const ms = (iso) => (iso ? new Date(iso).getTime() : null);
  const start = Math.min(ms(run.started_at) ?? Infinity, ...tasks.map((t) => ms(t.started_at) ?? ms(t.created_at)));
  const ends = tasks.map((t) => ms(t.ended_at) ?? Date.now());
  const end = Math.max(ms(run.ended_at) ?? 0, ...ends, start + 1);
  const span = end - start;
  const x = (t) => LABEL + ((t - start) / span) * WIDTH;
  const height = TOP + tasks.length * ROW + 6;
  const svg = s("svg", { id: "gantt", width: LABEL + WIDTH + 20, height });
  for (let i = 0; i <= 4; i++) {
    const tx = LABEL + (WIDTH * i) / 4;
    svg.append(s("line", { class: "axis", x1: tx, x2: tx, y1: TOP - 6, y2: height }),
      s("text", { class: "tick", x: tx, y: 12, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
        fmtDuration((span * i) / 4 / 1000)));
  }
  tasks.forEach((t, i) => {
    const y = TOP + i * ROW;
    const a = ms(t.started_at) ?? ms(t.created_at), b = ms(t.ended_at) ?? Date.now();
    svg.append(
      s("text", { x: 0, y: y + 14 }, t.name.length > 24 ? `${t.name.slice(0, 23)}…` : t.name),
      s("rect", { class: "bar", x: x(a), y: y + 3, width: Math.max(2, x(b) - x(a)), height: ROW - 8, rx: 3,
        fill: STATE_COLORS[t.state_type] || "#adb5bd" },
      s("title", {}, `${t.name}: ${fmtDuration((b - a) / 1000)} (${t.state_name})`)));
  });
  return svg;
}

// ---------------------------------------------------------------- flows

class FlowsView {
  constructor(root) {
    this.body = h("tbody", { id: "flows-body" });
    root.append(h("h1", {}, "Flows"), h("div", { class: "panel" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Flow", "Runs", "By state", "Last run"].map((t) => h("th", {}, t)))), this.body)));
  }

  async refresh() {
    const flows = await api("/api/flows");
    this.body.replaceChildren(...flows.map((f) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/flows/${encodeURIComponent(f.name)}`; } },
      h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(f.name)}` }, f.name)),
      h("td", {}, f.runs),
      h("td", {}, stateChips(f.states, f.name)),
      h("td", {}, f.last_run ? [badge(f.last_run.state_type, f.last_run.state_name), " ", ago(f.last_run.created_at)] : "–"))));
    if (!flows.length) this.body.append(h("tr", {}, h("td", { colspan: 4, class: "muted" }, "No flows have run yet.")));
  }
}

function stateChips(states, flowName) {
  return h("div", { class: "chips" }, Object.entries(states).sort().map(([st, n]) =>
    h("a", { href: `#/runs${query({ flow: flowName, state: st })}` }, badge(st, `${st.toLowerCase()} ${n}`))));
}

class FlowView {
  constructor(root, name) {
    this.name = name;
    this.range = "1h";
    this.header = h("div", {});
    this.charts = h("div", { class: "grid2" });
    this.sources = h("div", {});
    this.recent = h("tbody", {});
    this.notice = h("div", {});
    const rangeSelect = h("select", { id: "flow-range" }, Object.keys(RANGES).map((r) => h("option", { value: r, selected: r === this.range }, `last ${r}`)));
    rangeSelect.addEventListener("change", () => { this.range = rangeSelect.value; tick(); });
    root.append(
      h("h1", {}, this.name, h("a", { href: `#/runs${query({ flow: name })}`, style: "font-size:13px" }, "all runs →")),
      this.header, this.notice,
      h("div", { class: "panel filters" }, h("label", {}, "time", rangeSelect),
        h("button", { class: "secondary", id: "replay-failed", onclick: (e) => this.replay(e.target) }, "Replay failed runs in this range")),
      this.charts,
      h("div", { class: "panel" }, h("h2", {}, "Sources (live workers)"), this.sources),
      h("div", { class: "panel" }, h("h2", {}, "Recent runs"), h("table", {}, h("thead", {}, h("tr", {},
        ["State", "Run", "Event key", "Created", "Duration", "Error"].map((t) => h("th", {}, t)))), this.recent)));
  }

  async refresh() {
    const since = new Date(Date.now() - RANGES[this.range] * 1000).toISOString();
    const [flow, history, sources, runs] = await Promise.all([
      api(`/api/flows/${encodeURIComponent(this.name)}`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
      api(`/api/flows/${encodeURIComponent(this.name)}/history${query({ since })}`),
      api(`/api/sources${query({ flow: this.name })}`),
      api(`/api/flow-runs${query({ flow: this.name, limit: 10 })}`),
    ]);
    this.header.replaceChildren(flow
      ? h("div", { class: "panel facts" }, fact("Runs", flow.runs), fact("Version", flow.version || "–"),
        fact("Last run", flow.last_run ? ago(flow.last_run.created_at) : "–"), fact("By state", stateChips(flow.states, flow.name)))
      : h("div", { class: "notice bad" }, `No flow named ${this.name} has run.`));
    this.charts.replaceChildren(
      h("div", { class: "panel" }, h("h2", {}, `Throughput (runs ended per ${fmtBucket(history.bucket_seconds)})`), throughputChart(history)),
      h("div", { class: "panel" }, h("h2", {}, "Failure rate (failed + crashed / ended)"), failureChart(history)));
    this.sources.replaceChildren(sourcesTable(sources.subscriptions));
    this.recent.replaceChildren(...runs.items.map((r) => h("tr", { class: "clickable", onclick: () => { location.hash = `#/runs/${r.id}`; } },
      h("td", {}, badge(r.state_type, r.state_name)),
      h("td", { class: "mono" }, h("a", { href: `#/runs/${r.id}` }, shortId(r.id))),
      h("td", {}, r.event_key || ""),
      h("td", {}, ago(r.created_at)),
      h("td", {}, fmtDuration(runDuration(r))),
      h("td", { class: "error" }, r.error || ""))));
  }

  async replay(button) {
    button.disabled = true;
    try {
      const since = new Date(Date.now() - RANGES[this.range] * 1000).toISOString();
      const done = await api("/api/flow-runs/replay", { method: "POST", body: { flow_name: this.name, since } });
      this.notice.replaceChildren(h("div", { class: "notice", id: "replay-notice" },
        `${done.count} failed or crashed run(s) asked to run again.`));
    } catch (error) {
      this.notice.replaceChildren(h("div", { class: "notice bad" }, `Replay failed: ${error.message}`));
    } finally {
      button.disabled = false;
    }
  }
}

function fmtBucket(seconds) {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${seconds / 60} min`;
  if (seconds < 86400) return `${seconds / 3600} h`;
  return `${seconds / 86400} d`;
}

const CHART_W = 560, CHART_H = 180, CHART_L = 44, CHART_B = 22;

function chartFrame(id, history, yMax, yLabel) {
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

function throughputChart(history) {
  const n = history.buckets.length || 1;
  const highest = Math.max(1, ...history.buckets.map((b) => b.total));
  const peak = highest <= 4 ? 4 : Math.ceil(highest / 4) * 4; // round ticks
  const { svg, plotH } = chartFrame("throughput-chart", history, peak, (v) => (Number.isInteger(v) ? v : v.toFixed(1)));
  const bw = (CHART_W - CHART_L) / n;
  history.buckets.forEach((b, i) => {
    let y = 8 + plotH;
    for (const st of ["COMPLETED", "CANCELLED", "CRASHED", "FAILED"]) {
      const count = b.counts[st] || 0;
      if (!count) continue;
      const hgt = (count / peak) * plotH;
      y -= hgt;
      svg.append(s("rect", { class: "bar", x: CHART_L + i * bw + 1, y, width: Math.max(1, bw - 2), height: hgt, fill: STATE_COLORS[st] },
        s("title", {}, `${new Date(b.start).toLocaleString()}: ${count} ${st.toLowerCase()} (${b.throughput_per_second.toFixed(2)} runs/s in all)`)));
    }
  });
  const total = history.buckets.reduce((a, b) => a + b.total, 0);
  return h("div", {}, svg, h("div", { class: "legend" }, `${total} runs ended in range, peak ${(highest / history.bucket_seconds).toFixed(2)} runs/s`));
}

function failureChart(history) {
  const { svg, plotH } = chartFrame("failure-chart", history, 1, (v) => `${Math.round(v * 100)}%`);
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

function sourcesTable(subscriptions) {
  if (!subscriptions.length) return h("p", { class: "muted" }, "No live worker reports a subscription.");
  return h("table", { class: "sources-table" },
    h("thead", {}, h("tr", {}, ["Subscription", "Workers", "Lag", "In flight", "Received", "Completed", "Failed", "Dead-lettered", "Last event", "Last error"].map((t) => h("th", {}, t)))),
    h("tbody", {}, subscriptions.map((sub) => h("tr", { "data-subscription": sub.subscription },
      h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(sub.flow_name)}` }, sub.subscription)),
      h("td", {}, sub.workers),
      h("td", { class: "lag" }, sub.lag ?? "–"),
      h("td", {}, sub.in_flight),
      h("td", {}, sub.received),
      h("td", {}, sub.completed),
      h("td", {}, sub.failed),
      h("td", {}, sub.dead_lettered),
      h("td", { title: fmtTime(sub.last_event_at) }, ago(sub.last_event_at)),
      h("td", { class: "error", title: sub.last_error || "" }, sub.last_error ? `${sub.last_error} (${ago(sub.last_error_at)})` : "")))));
}

// ---------------------------------------------------------------- workers

class WorkersView {
  constructor(root) {
    this.body = h("tbody", { id: "workers-body" });
    this.sources = h("div", {});
    root.append(h("h1", {}, "Workers & sources"),
      h("div", { class: "panel" }, h("h2", {}, "Sources (live workers)"), this.sources),
      h("div", { class: "panel" }, h("h2", {}, "Workers"), h("table", {}, h("thead", {}, h("tr", {},
        ["Worker", "Host", "PID", "Status", "Started", "Last heartbeat", "Runs in flight"].map((t) => h("th", {}, t)))), this.body)));
  }

  async refresh() {
    const [workers, sources] = await Promise.all([api("/api/workers"), api("/api/sources")]);
    this.sources.replaceChildren(sourcesTable(sources.subscriptions));
    this.body.replaceChildren(...workers.map((w) => h("tr", { "data-worker-id": w.id },
      h("td", { class: "mono" }, w.id),
      h("td", {}, w.hostname),
      h("td", {}, w.pid),
      h("td", {}, w.alive ? badge("alive", "alive") : badge("dead", w.stopped_at ? "stopped" : "silent")),
      h("td", {}, fmtTime(w.started_at)),
      h("td", {}, ago(w.heartbeat_at)),
      h("td", {}, w.runs_in_flight))));
    if (!workers.length) this.body.append(h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No worker has registered.")));
  }
}
