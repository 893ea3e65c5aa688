// The flows list and one flow: charts, durations, sources, recent runs, replay.
import { h, patch, linkRow } from "../dom.js";
import { RANGES, shortId, ago, fmtDuration, runDuration, fmtBucket } from "../format.js";
import { badge, stateChips } from "../states.js";
import { api, query } from "../api.js";
import { tick } from "../live.js";
import { fact, sourcesTable } from "../widgets.js";
import { throughputChart, failureChart, durationScatter } from "../charts.js";

export class FlowsView {
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

export class FlowView {
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
