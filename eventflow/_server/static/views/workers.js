// Workers and the sources they report.
import { h, patch } from "../dom.js";
import { fmtTime, ago } from "../format.js";
import { badge } from "../states.js";
import { api } from "../api.js";
import { sourcesTable } from "../widgets.js";

export class WorkersView {
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
