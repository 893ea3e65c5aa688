// The dashboard: tiles, charts, subscriptions and flows for a time window.
import { h, patch, linkRow } from "../dom.js";
import { fmtTime, ago, fmtDuration, fmtBucket, fmtRate, fmtPercent } from "../format.js";
import { stateLegend, subscriptionState, stateChips } from "../states.js";
import { api, query } from "../api.js";
import { tick } from "../live.js";
import { setHashParams, subscriptionHref } from "../nav.js";
import { tile } from "../widgets.js";
import { throughputChart, failureChart, sparkline } from "../charts.js";
import { lateList } from "./lineage.js";

export const WINDOWS = { "1h": "last hour", "24h": "last day", "7d": "last week" };
export const WINDOW_REFRESH_MS = { "1h": 0, "24h": 10000, "7d": 30000 }; // a week's scan is not redone every tick

export class DashboardView {
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
    const [d, lineage] = await Promise.all([api(`/api/dashboard${query({ window: asked })}`), api("/api/lineage")]);
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
      h("div", { class: "panel", id: "dashboard-late" }, h("h2", {}, "Late data ", h("a", { href: "#/lineage", class: "note" }, "lineage")),
        lateList(lineage, "dashboard-late-list")),
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
