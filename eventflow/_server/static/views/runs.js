// The runs list: filters kept in the address, pages, new runs highlighted.
import { h, patch, linkRow } from "../dom.js";
import { RANGES, shortId, fmtTime, ago, fmtDuration, runDuration, toLocalInput } from "../format.js";
import { STATES, badge } from "../states.js";
import { api, query } from "../api.js";
import { tick } from "../live.js";
import { setHashParams } from "../nav.js";

export const FRESH_MS = 4000; // how long a run that just appeared stays highlighted

export function rangeSince(range, params) {
  if (range === "custom") return params.since || null;
  const seconds = RANGES[range];
  return seconds ? new Date(Date.now() - seconds * 1000).toISOString() : null;
}

export class RunsView {
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
