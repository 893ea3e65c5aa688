// eventflow web UI: plain DOM, no build step. Every view re-reads the API while
// live updates are on (every 1.5 s, paused while the tab is hidden) and patches
// the page: a node whose tag, attributes and text did not change is left as it
// is, so what a user reads, selects or has folded open never jumps.
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
    if (k.startsWith("on")) el[k] = v; // a property, so a patch can hand it on
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

// ---------------------------------------------------------------- patching

const HANDLERS = ["onclick", "onchange", "onkeydown", "onfocus"];
const USER_ATTRIBUTES = new Set(["open"]); // <details> folded or unfolded by the user

function keyOf(node) {
  return node.nodeType === 1 ? node.getAttribute("data-key") || node.id || null : null;
}

// Make `el`'s children look like `children` (fresh, detached nodes), reusing every
// existing node that can be kept: keyed ones by key, others by position and tag.
function patch(el, ...children) {
  const wanted = [];
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    wanted.push(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  const keyed = new Map();
  for (const node of el.childNodes) {
    const key = keyOf(node);
    if (key !== null) keyed.set(key, node);
  }
  wanted.forEach((want, i) => {
    const current = el.childNodes[i] || null;
    const key = keyOf(want);
    let keep = null;
    if (key !== null) keep = keyed.get(key) || null;
    else if (current && keyOf(current) === null && current.nodeName === want.nodeName) keep = current;
    if (keep) {
      if (key !== null) keyed.delete(key);
      morph(keep, want);
      if (keep !== current) el.insertBefore(keep, current);
    } else {
      el.insertBefore(want, current);
    }
  });
  while (el.childNodes.length > wanted.length) el.lastChild.remove();
}

function morph(node, want) {
  if (node.nodeType !== 1) {
    if (node.nodeValue !== want.nodeValue) node.nodeValue = want.nodeValue;
    return;
  }
  for (const { name } of [...node.attributes]) {
    if (!want.hasAttribute(name) && !USER_ATTRIBUTES.has(name)) node.removeAttribute(name);
  }
  for (const { name, value } of want.attributes) {
    if (USER_ATTRIBUTES.has(name)) continue;
    if (node.getAttribute(name) !== value) node.setAttribute(name, value);
  }
  for (const handler of HANDLERS) {
    if (node[handler] !== want[handler]) node[handler] = want[handler];
  }
  patch(node, [...want.childNodes]);
}

// A list row that opens `href`: clickable, focusable, Enter opens it, arrows move.
function linkRow(href, attrs, ...cells) {
  return h("tr", {
    ...attrs,
    class: `clickable${attrs.class ? ` ${attrs.class}` : ""}`,
    tabindex: 0,
    onclick: (e) => { if (!e.target.closest("a")) location.hash = href; },
    onkeydown: (e) => {
      const row = e.currentTarget;
      if (e.key === "Enter") location.hash = href;
      else if (e.key === "ArrowDown" && row.nextElementSibling) { e.preventDefault(); row.nextElementSibling.focus(); }
      else if (e.key === "ArrowUp" && row.previousElementSibling) { e.preventDefault(); row.previousElementSibling.focus(); }
    },
  }, ...cells);
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
  if (seconds === 0) return "0 s";
  if (seconds < 0.001) return `${Math.max(1, Math.round(seconds * 1e6))} µs`;
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

const live = { paused: false, view: null, timer: null, busy: false, again: false, count: 0 };

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
    live.count += 1;
    document.body.dataset.refreshes = live.count; // tests wait on refreshes, not on time
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
  const section = parts[0] || "dashboard";
  if (section === "runs" && parts[1]) view = new RunView(main, parts[1]);
  else if (section === "flows" && parts[1]) view = new FlowView(main, parts[1]);
  else if (section === "flows") view = new FlowsView(main);
  else if (section === "workers") view = new WorkersView(main);
  else if (section === "subscriptions" && parts[1]) view = new SubscriptionView(main, parts.slice(1).join("/"));
  else if (section === "runs") view = new RunsView(main, params);
  else view = new DashboardView(main, params);
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
    patch(this.body, page.items.length
      ? page.items.map((run) => this.row(run, now - this.firstSeen.get(run.id) < FRESH_MS))
      : h("tr", { "data-key": "empty" }, h("td", { colspan: 8, class: "muted" }, "No flow runs match these filters.")));
    patch(this.stateSummary, STATES.filter((st) => page.states[st]).map((st) =>
      h("a", {
        href: "#", "data-state": st, "data-key": st, class: p.state === st ? "chosen" : "",
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
    return linkRow(`#/runs/${run.id}`, {
      class: fresh ? "fresh" : "", "data-key": run.id, "data-run-id": run.id, "data-state": run.state_type,
    },
    h("td", {}, badge(run.state_type, run.state_name)),
    h("td", {}, h("a", { href: `#/runs/${run.id}` }, run.name || h("span", { class: "mono" }, shortId(run.id))),
      run.retry_of ? h("span", { class: "muted", title: "a retry" }, " ↻") : null,
      run.name ? h("div", { class: "mono muted" }, shortId(run.id)) : null),
    h("td", {}, run.flow_name),
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
    this.retried = null; // the retry asked for from this page, or its error
  }

  async refresh() {
    let run;
    try {
      run = await api(`/api/flow-runs/${encodeURIComponent(this.runId)}`);
    } catch (error) {
      if (error.status === 404) {
        if (this.current) patch(this.root, h("div", { class: "notice bad", id: "not-found" }, `No flow run ${this.runId}.`));
        return;
      }
      throw error;
    }
    this.run = run;
    this.render();
  }

  // This view draws straight into the page: never after another view took it over.
  get current() {
    return live.view === this;
  }

  render() {
    if (!this.current) return;
    const run = this.run;
    const names = Object.fromEntries(run.task_runs.map((t) => [t.id, t.name]));
    const failing = run.task_runs.find((t) => t.id === run.error_task_run_id);
    // Retry resumes: completed task runs are reused; a full re-run calls every task again
    const retry = REPLAYABLE.has(run.state_type)
      ? [h("button", { class: "primary", id: "retry-button", title: "Run again from the task that did not complete", onclick: (e) => this.retry(e.target) }, "Retry"),
        h("button", { class: "secondary", id: "full-retry-button", title: "Run every task again", onclick: (e) => this.retry(e.target, true) }, "Full re-run")]
      : null;
    patch(this.root,
      h("h1", {},
        h("a", { href: `#/flows/${encodeURIComponent(run.flow_name)}` }, run.flow_name),
        run.name ? h("span", { id: "run-name" }, run.name) : null,
        h("span", { class: "mono muted" }, run.id),
        h("span", { id: "run-state" }, badge(run.state_type, run.state_name)),
        retry),
      h("div", { id: "retry-notice" }, this.notice()),
      h("div", { class: "panel facts" },
        fact("Name", run.name || "–"),
        fact("Created", fmtTime(run.created_at)),
        fact("Started", fmtTime(run.started_at)),
        fact("Ended", fmtTime(run.ended_at)),
        fact("Duration", fmtDuration(runDuration(run))),
        fact("Attempts", run.run_count),
        fact("Worker", run.worker_id || "–"),
        run.retry_of ? fact("Retry of", h("a", { href: `#/runs/${run.retry_of}`, id: "retry-of" }, shortId(run.retry_of))) : null,
        run.resumed_from ? fact("Resumed from", h("a", { href: `#/runs/${run.resumed_from}`, id: "resumed-from" }, shortId(run.resumed_from))) : null,
        run.linked_run_id ? fact("Linked run", h("a", { href: `#/runs/${run.linked_run_id}`, id: "linked-run" }, shortId(run.linked_run_id))) : null,
        run.parent_flow_run_id ? fact("Parent run", h("a", { href: `#/runs/${run.parent_flow_run_id}` }, shortId(run.parent_flow_run_id))) : null,
        run.trace_id ? fact("Trace", run.trace_url
          ? h("a", { href: run.trace_url, id: "trace-link", class: "mono", target: "_blank", rel: "noopener" }, run.trace_id)
          : h("span", { id: "trace-id", class: "mono" }, run.trace_id)) : null),
      run.error ? h("div", { class: "panel", id: "error-panel" },
        h("h2", {}, "Error", failing ? [" in task run ", h("a", {
          href: "#task-runs", id: "error-task-link", "data-task-id": failing.id,
          onclick: (e) => { e.preventDefault(); this.select(failing.id, true); },
        }, failing.name)] : null),
        h("pre", { class: "error-text", id: "run-error" }, run.error),
        folded("run-traceback", "Traceback", failing ? failing.traceback || run.traceback : run.traceback)) : null,
      run.replays.length ? h("div", { class: "panel", id: "replays" }, h("h2", {}, "Retries of this run"),
        h("div", { class: "chips" }, run.replays.map((r) =>
          h("a", { href: `#/runs/${r.id}`, class: "replay-link", "data-key": r.id }, badge(r.state_type, `${r.state_name} · ${shortId(r.id)}`))))) : null,
      h("div", { class: "panel", id: "graph-panel" }, h("h2", {}, `Task graph (${run.task_runs.length} task runs, ${run.edges.length} edges)`),
        h("div", { class: "scroll-x" }, taskGraph(run, this.selected, (id) => this.select(id))), legend()),
      h("div", { class: "panel", id: "timeline-panel" }, h("h2", {}, "Timeline"), h("div", { class: "scroll-x" }, gantt(run))),
      h("div", { class: "panel", id: "task-runs" }, h("h2", {}, "Task runs"), this.taskTable(run)),
      h("div", { class: "grid2", id: "io" },
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
        h("div", { class: "panel", id: "io-values" }, h("h2", {}, "Parameters"), h("pre", { id: "parameters" }, pretty(run.parameters ?? {})),
          h("h2", { style: "margin-top:12px" }, "Result"), h("pre", { id: "result" }, run.result === null ? "–" : pretty(run.result)))),
      h("div", { class: "panel", id: "logs" }, h("h2", {}, `Logs (${run.logs.length})`), logTable(run.logs, names)),
    );
  }

  notice() {
    if (!this.retried) return null;
    if (this.retried.error) return h("div", { class: "notice bad" }, `Retry failed: ${this.retried.error}`);
    return h("div", { class: "notice" },
      "Retry requested: ", h("a", { href: `#/runs/${this.retried.id}`, id: "retry-link" }, this.retried.id),
      " (pending until a worker running this flow picks it up).");
  }

  taskTable(run) {
    return h("table", { id: "task-table" },
      h("thead", {}, h("tr", {}, ["Task run", "State", "Attempts", "Started", "Duration", "Error"].map((t) => h("th", {}, t)))),
      h("tbody", {}, run.task_runs.map((t) => h("tr", {
        "data-task-id": t.id, "data-key": t.id, class: t.id === this.selected ? "selected" : "",
      },
      h("td", {}, t.name),
      h("td", {}, badge(t.state_type, t.state_name), t.reused_from_run ? [" from ", h("a", {
        href: `#/runs/${t.reused_from_run}`, class: "reused-from", title: `task run ${t.reused_from}`,
      }, shortId(t.reused_from_run))] : null),
      h("td", {}, t.run_count),
      h("td", {}, fmtTime(t.started_at)),
      h("td", {}, fmtDuration(runDuration(t))),
      h("td", { class: "error-text" }, t.error || "", folded(`traceback-${t.id}`, "Traceback", t.traceback))))));
  }

  select(taskId, scroll = false) {
    this.selected = taskId;
    for (const el of this.root.querySelectorAll("[data-task-id]")) {
      el.classList.toggle("selected", el.dataset.taskId === taskId);
    }
    const row = this.root.querySelector(`#task-table tr[data-task-id="${taskId}"]`);
    if (scroll && row) row.scrollIntoView({ block: "center" });
  }

  async retry(button, full = false) {
    button.disabled = true;
    try {
      const query = full ? "?full=true" : "";
      const created = await api(`/api/flow-runs/${encodeURIComponent(this.runId)}/retry${query}`, { method: "POST" });
      this.retried = { id: created.id };
    } catch (error) {
      this.retried = { error: error.message };
      button.disabled = false;
    }
    if (this.run) this.render();
  }
}

// A traceback, folded until asked for (the fold survives live updates).
function folded(id, label, text) {
  if (!text) return null;
  const lines = text.trimEnd().split("\n");
  return h("details", { class: "traceback", id, "data-key": id },
    h("summary", {}, `${label} (${lines.length} lines)`),
    h("pre", {}, text));
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

let measureContext = null;

// The width a label takes in the page's font, so a box can be made to fit it.
function textWidth(text, font) {
  measureContext = measureContext || document.createElement("canvas").getContext("2d");
  measureContext.font = font;
  return measureContext.measureText(text).width;
}

function nodeStatus(t) {
  return `${t.state_name}${t.run_count > 1 ? ` · ${t.run_count} attempts` : ""}`;
}

function taskGraph(run, selected, onSelect) {
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

function gantt(run) {
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

// ---------------------------------------------------------------- flows

class FlowsView {
  constructor(root) {
    this.body = h("tbody", { id: "flows-body" });
    root.append(h("h1", {}, "Flows"), h("div", { class: "panel" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Flow", "Runs", "By state", "Last run"].map((t) => h("th", {}, t)))), this.body)));
  }

  async refresh() {
    const flows = await api("/api/flows");
    patch(this.body, flows.length ? flows.map((f) => linkRow(`#/flows/${encodeURIComponent(f.name)}`, { "data-key": f.name },
      h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(f.name)}` }, f.name)),
      h("td", {}, f.runs),
      h("td", {}, stateChips(f.states, f.name)),
      h("td", {}, f.last_run ? [badge(f.last_run.state_type, f.last_run.state_name), " ", ago(f.last_run.created_at)] : "–")))
      : h("tr", { "data-key": "empty" }, h("td", { colspan: 4, class: "muted" }, "No flows have run yet.")));
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
    this.scatter = h("div", { class: "panel", id: "duration-panel" });
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
      this.scatter,
      h("div", { class: "panel" }, h("h2", {}, "Sources (live workers)"), this.sources),
      h("div", { class: "panel" }, h("h2", {}, "Recent runs"), h("table", {}, h("thead", {}, h("tr", {},
        ["State", "Run", "Event key", "Created", "Duration", "Error"].map((t) => h("th", {}, t)))), this.recent)));
  }

  async refresh() {
    const since = new Date(Date.now() - RANGES[this.range] * 1000).toISOString();
    const [flow, history, sources, runs, ranged] = await Promise.all([
      api(`/api/flows/${encodeURIComponent(this.name)}`).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
      api(`/api/flows/${encodeURIComponent(this.name)}/history${query({ since })}`),
      api(`/api/sources${query({ flow: this.name })}`),
      api(`/api/flow-runs${query({ flow: this.name, limit: 10 })}`),
      api(`/api/flow-runs${query({ flow: this.name, since, limit: 500 })}`),
    ]);
    patch(this.header, flow
      ? h("div", { class: "panel facts" }, fact("Runs", flow.runs), fact("Version", flow.version || "–"),
        fact("Last run", flow.last_run ? ago(flow.last_run.created_at) : "–"), fact("By state", stateChips(flow.states, flow.name)))
      : h("div", { class: "notice bad" }, `No flow named ${this.name} has run.`));
    patch(this.charts,
      h("div", { class: "panel" }, h("h2", {}, `Throughput (runs ended per ${fmtBucket(history.bucket_seconds)})`), throughputChart(history)),
      h("div", { class: "panel" }, h("h2", {}, "Failure rate (failed + crashed / ended)"), failureChart(history)));
    patch(this.scatter, h("h2", {}, `Run durations (${ranged.items.length}${ranged.next_offset !== null ? ` newest of ${ranged.total}` : ""} runs in range)`),
      durationScatter(ranged.items, new Date(since).getTime(), Date.now()));
    patch(this.sources, sourcesTable(sources.subscriptions));
    patch(this.recent, runs.items.map((r) => linkRow(`#/runs/${r.id}`, { "data-key": r.id },
      h("td", {}, badge(r.state_type, r.state_name)),
      h("td", {}, h("a", { href: `#/runs/${r.id}` }, r.name || shortId(r.id))),
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

function throughputChart(history, id = "throughput-chart", noun = "ended") {
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

function failureChart(history, id = "failure-chart") {
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

function sourcesTable(subscriptions) {
  if (!subscriptions.length) return h("p", { class: "muted" }, "No live worker reports a subscription.");
  return h("table", { class: "sources-table" },
    h("thead", {}, h("tr", {}, ["Subscription", "Flow", "Workers", "Lag", "In flight", "Received", "Completed", "Failed", "Dead-lettered", "Last event", "Last error"].map((t) => h("th", {}, t)))),
    h("tbody", {}, subscriptions.map((sub) => h("tr", { "data-subscription": sub.subscription, "data-key": sub.subscription },
      h("td", {}, h("a", { href: subscriptionHref(sub.subscription) }, sub.subscription)),
      h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(sub.flow_name)}` }, sub.flow_name)),
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
    patch(this.sources, sourcesTable(sources.subscriptions));
    patch(this.body, workers.map((w) => h("tr", { "data-worker-id": w.id, "data-key": w.id },
      h("td", { class: "mono" }, w.id),
      h("td", {}, w.hostname),
      h("td", {}, w.pid),
      h("td", { class: "status" }, w.alive ? badge("alive", "alive") : badge("dead", w.stopped_at ? "stopped" : "silent")),
      h("td", {}, fmtTime(w.started_at)),
      h("td", {}, ago(w.heartbeat_at)),
      h("td", {}, w.runs_in_flight))),
    workers.length ? null : h("tr", { "data-key": "empty" }, h("td", { colspan: 7, class: "muted" }, "No worker has registered.")));
  }
}

// ---------------------------------------------------------------- dashboard

const WINDOWS = { "1h": "last hour", "24h": "last day", "7d": "last week" };
const WINDOW_REFRESH_MS = { "1h": 0, "24h": 10000, "7d": 30000 }; // a week's scan is not redone every tick
const SUBSCRIPTION_STATES = { running: "COMPLETED", reconnecting: "RETRYING", stalled: "FAILED", stopped: "CANCELLED" };

function subscriptionHref(name) {
  return `#/subscriptions/${encodeURIComponent(name)}`;
}

function subscriptionState(state) {
  return h("span", { class: "sub-state", "data-state": state }, badge(SUBSCRIPTION_STATES[state] || "PENDING", state));
}

function fmtRate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 10 ? value.toFixed(0) : value >= 1 ? value.toFixed(1) : value.toFixed(2);
}

function fmtPercent(value) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`;
}

function tile(id, label, value, note) {
  return h("div", { class: "tile", id, "data-key": id },
    h("span", { class: "label" }, label), h("span", { class: "value" }, value), note ? h("span", { class: "note" }, note) : null);
}

function sparkline(values, failed) {
  const W = 120, H = 26, top = Math.max(1, ...values);
  const bw = W / Math.max(1, values.length);
  return s("svg", { class: "sparkline", width: W, height: H, viewBox: `0 0 ${W} ${H}`, "aria-hidden": "true" },
    values.map((v, i) => (v ? s("rect", { x: i * bw, y: H - (v / top) * H, width: Math.max(1, bw - 0.5), height: (v / top) * H,
      fill: failed ? STATE_COLORS.FAILED : STATE_COLORS.COMPLETED }) : null)));
}

class DashboardView {
  constructor(root, params) {
    this.window = WINDOWS[params.get("window")] ? params.get("window") : "1h";
    const select = h("select", { id: "dashboard-window", "aria-label": "time window" },
      Object.entries(WINDOWS).map(([w, label]) => h("option", { value: w, selected: w === this.window }, label)));
    this.due = 0;
    select.addEventListener("change", () => {
      this.window = select.value;
      this.due = 0;
      setHashParams("dashboard", { window: this.window === "1h" ? "" : this.window });
      tick();
    });
    this.content = h("div", { id: "dashboard" });
    root.append(h("h1", {}, "Dashboard", h("label", { class: "inline" }, "window ", select)), this.content);
  }

  async refresh() {
    if (Date.now() < this.due) return;
    const asked = this.window;
    const d = await api(`/api/dashboard${query({ window: asked })}`);
    if (asked !== this.window) return; // changed meanwhile: the refresh that follows reads it
    this.due = Date.now() + WINDOW_REFRESH_MS[asked];
    const history = { buckets: d.buckets, bucket_seconds: d.bucket_seconds };
    const inFlight = Object.values(d.active).reduce((a, b) => a + b, 0);
    patch(this.content,
      h("div", { class: "tiles", id: "tiles" },
        tile("stat-runs", "Runs", d.runs, `${WINDOWS[d.window]} · ${d.finished} finished`),
        tile("stat-failed", "Failed or crashed", d.failed, `${fmtPercent(d.failure_rate)} of finished`),
        tile("stat-p50", "p50 duration", fmtDuration(d.duration_p50), `of ${d.duration_runs} runs`),
        tile("stat-p95", "p95 duration", fmtDuration(d.duration_p95)),
        tile("stat-active", "In flight", inFlight, Object.entries(d.active).map(([k, v]) => `${k.toLowerCase()} ${v}`).join(" · ")),
        tile("stat-workers", "Workers alive", `${d.workers_alive} / ${d.workers_total}`)),
      h("div", { class: "grid2", id: "dashboard-charts" },
        h("div", { class: "panel" }, h("h2", {}, `Runs per ${fmtBucket(d.bucket_seconds)}, by state`),
          throughputChart(history, "dashboard-runs-chart", "created"), stateLegend()),
        h("div", { class: "panel" }, h("h2", {}, "Failure rate (failed + crashed / finished)"), failureChart(history, "dashboard-failure-chart"))),
      h("div", { class: "panel", id: "dashboard-subscriptions" }, h("h2", {}, "Subscriptions (live workers)"),
        d.subscriptions.length ? h("table", {},
          h("thead", {}, h("tr", {}, ["Subscription", "Flow", "State", "Events/s", "Lag", "In flight", "Dead-lettered", "Last event", "Last error"].map((t) => h("th", {}, t)))),
          h("tbody", { id: "dash-subscriptions-body" }, d.subscriptions.map((sub) => linkRow(subscriptionHref(sub.subscription),
            { "data-key": sub.subscription, "data-subscription": sub.subscription },
            h("td", {}, h("a", { href: subscriptionHref(sub.subscription) }, sub.subscription)),
            h("td", {}, sub.flow_name),
            h("td", { class: "state", title: sub.state_since ? `since ${fmtTime(sub.state_since)}` : "" }, subscriptionState(sub.state)),
            h("td", { class: "rate" }, fmtRate(sub.events_per_second)),
            h("td", { class: "lag" }, sub.lag ?? "–"),
            h("td", {}, sub.in_flight),
            h("td", { class: "dead" }, sub.dead_lettered),
            h("td", { title: fmtTime(sub.last_event_at) }, ago(sub.last_event_at)),
            h("td", { class: "error", title: sub.last_error || "" }, sub.last_error ? `${sub.last_error} (${ago(sub.last_error_at)})` : "")))))
          : h("p", { class: "muted" }, "No live worker reports a subscription.")),
      h("div", { class: "panel", id: "dashboard-flows" }, h("h2", {}, `Flows, most failures first (${WINDOWS[d.window]})`),
        d.flows.length ? h("table", {},
          h("thead", {}, h("tr", {}, ["Flow", "Runs", "Failed", "Failure rate", "Runs over time", "By state"].map((t) => h("th", {}, t)))),
          h("tbody", { id: "dash-flows-body" }, d.flows.map((f) => linkRow(`#/flows/${encodeURIComponent(f.name)}`,
            { "data-key": f.name, "data-flow": f.name },
            h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(f.name)}` }, f.name)),
            h("td", { class: "runs" }, f.runs),
            h("td", { class: "failed" }, f.failed),
            h("td", { class: "rate" }, fmtPercent(f.failure_rate)),
            h("td", {}, sparkline(f.series, f.failed > 0)),
            h("td", {}, stateChips(f.counts, f.name))))))
          : h("p", { class: "muted" }, "No run in this window.")),
    );
  }
}

function stateLegend() {
  return h("div", { class: "legend" }, ["COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "RETRYING", "PENDING"].map((st) =>
    h("span", {}, h("i", { style: `background:${STATE_COLORS[st]}` }), st.toLowerCase())));
}

// ---------------------------------------------------------------- subscription

class SubscriptionView {
  constructor(root, name) {
    this.name = name;
    this.content = h("div", { id: "subscription" });
    this.notice = h("div", { id: "dead-letter-notice-box" });
    this.root = root;
    root.append(h("h1", {}, h("span", { class: "muted" }, "Subscription"), h("span", { id: "subscription-name" }, name)),
      this.notice, this.content);
  }

  async refresh() {
    let sub;
    try {
      sub = await api(`/api/subscriptions/${encodeURIComponent(this.name)}`);
    } catch (error) {
      if (error.status === 404) {
        patch(this.content, h("div", { class: "notice bad", id: "not-found" }, `No worker has reported subscription ${this.name}.`));
        return;
      }
      throw error;
    }
    this.sub = sub;
    const replayable = sub.recent_dead_letters.filter((d) => REPLAYABLE.has(d.run.state_type));
    patch(this.content,
      h("div", { class: "panel facts", id: "subscription-facts" },
        fact("State", h("span", { id: "sub-state" }, subscriptionState(sub.state), sub.state_since ? h("span", { class: "muted" }, ` since ${ago(sub.state_since)}`) : null)),
        fact("Flow", h("a", { href: `#/flows/${encodeURIComponent(sub.flow_name)}` }, sub.flow_name)),
        fact("Source", sub.source),
        fact("Lag", h("span", { id: "sub-lag" }, sub.lag ?? "–")),
        fact("Events/s (last minute)", h("span", { id: "sub-rate" }, fmtRate(sub.events_per_second))),
        fact("Store", sub.store_up ? "reachable" : h("span", { class: "error-text" }, "unreachable: consumption paused")),
        fact("Dead-lettered (live workers)", h("span", { id: "sub-dead" }, sub.dead_lettered)),
        fact("Failed events (store)", h("span", { id: "sub-failed-events" }, sub.failed_events))),
      sub.last_error ? h("div", { class: "panel", id: "sub-error" }, h("h2", {}, `Last error (${ago(sub.last_error_at)})`),
        h("pre", { class: "error-text" }, sub.last_error)) : null,
      h("div", { class: "grid2" },
        h("div", { class: "panel", id: "partitions" }, h("h2", {}, "Partitions"),
          sub.partitions.length ? h("table", {},
            h("thead", {}, h("tr", {}, ["Partition", "Worker", "Lag", "Position", "Stored", "Committed", "Stored − committed"].map((t) => h("th", {}, t)))),
            h("tbody", { id: "partitions-body" }, sub.partitions.map((p) => h("tr", { "data-key": `${p.worker_id} ${p.partition}`, "data-partition": p.partition },
              h("td", { class: "mono" }, p.partition),
              h("td", { class: "mono" }, p.worker_id),
              h("td", { class: "lag" }, p.lag ?? "–"),
              h("td", { class: "position" }, p.position ?? "–"),
              h("td", { class: "stored" }, p.stored ?? "–"),
              h("td", { class: "committed" }, p.committed ?? "–"),
              h("td", {}, p.stored !== null && p.committed !== null ? p.stored - p.committed : "–")))))
            : h("p", { class: "muted" }, "No partitions: an unpartitioned source, or no live worker.")),
        h("div", { class: "panel" }, h("h2", {}, `Events/s per ${fmtBucket(sub.bucket_seconds)}, last hour`), rateChart(sub))),
      h("div", { class: "panel", id: "sub-workers" }, h("h2", {}, "Workers"), h("table", {},
        h("thead", {}, h("tr", {}, ["Worker", "Alive", "State", "Received", "Completed", "Failed", "Dead-lettered", "In flight", "Last event"].map((t) => h("th", {}, t)))),
        h("tbody", {}, sub.workers.map((w) => h("tr", { "data-key": w.worker_id, "data-worker-id": w.worker_id },
          h("td", { class: "mono" }, w.worker_id),
          h("td", {}, w.alive ? badge("alive", "alive") : badge("dead", "not alive")),
          h("td", {}, subscriptionState(w.state)),
          h("td", {}, w.received), h("td", {}, w.completed), h("td", {}, w.failed), h("td", {}, w.dead_lettered),
          h("td", {}, w.in_flight), h("td", { title: fmtTime(w.last_event_at) }, ago(w.last_event_at))))))),
      h("div", { class: "panel", id: "dead-letters" },
        h("h2", {}, `Most recent dead letters (${sub.recent_dead_letters.length} of ${sub.failed_events})`,
          replayable.length ? h("button", { class: "secondary", id: "replay-dead-letters", onclick: (e) => this.replay(e.target) },
            `Replay these ${replayable.length}`) : null),
        sub.recent_dead_letters.length ? sub.recent_dead_letters.map((d) => deadLetter(d))
          : h("p", { class: "muted" }, "No event of this subscription has failed.")),
    );
  }

  async replay(button) {
    button.disabled = true;
    let asked = 0;
    const refused = [];
    for (const d of this.sub.recent_dead_letters) {
      try {
        await api(`/api/flow-runs/${encodeURIComponent(d.run.id)}/retry`, { method: "POST" });
        asked += 1;
      } catch (error) {
        if (error.status !== 409) throw error;
        refused.push(error.message); // e.g. an event of a batch run: the message names its run
      }
    }
    this.notice.replaceChildren(h("div", { class: "notice", id: "dead-letter-notice" },
      `${asked} dead letter(s) asked to run again${refused.length ? `; ${refused.length} refused (${refused[0]})` : ""}.`));
    button.disabled = false;
  }
}

function deadLetter(d) {
  const r = d.run;
  return h("div", { class: "dead-letter", "data-key": r.id, "data-run-id": r.id },
    h("div", { class: "dead-letter-head" }, badge(r.state_type, r.state_name), " ",
      h("a", { href: `#/runs/${r.id}` }, r.name || shortId(r.id)), " ",
      h("span", { class: "muted" }, ago(r.created_at)), " ",
      h("span", { class: "error-text" }, r.error || "")),
    h("details", { class: "traceback", id: `dead-letter-${r.id}` },
      h("summary", {}, "Headers and payload"),
      h("table", { class: "headers" }, h("tbody", {}, Object.entries(d.headers).map(([k, v]) =>
        h("tr", {}, h("th", { class: "mono" }, k), h("td", { class: "mono" }, v ?? "–"))))),
      h("pre", { class: "payload" }, pretty(d.payload))));
}

function rateChart(sub) {
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
function durationScatter(runs, from, to) {
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
