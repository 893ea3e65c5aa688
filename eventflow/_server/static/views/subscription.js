// One subscription: state, partitions, workers, rate, dead letters and their replay.
import { h, patch } from "../dom.js";
import { shortId, fmtTime, ago, pretty, fmtBucket, fmtRate } from "../format.js";
import { REPLAYABLE, badge, subscriptionState } from "../states.js";
import { api } from "../api.js";
import { fact } from "../widgets.js";
import { rateChart } from "../charts.js";

export class SubscriptionView {
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

export function deadLetter(d) {
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
