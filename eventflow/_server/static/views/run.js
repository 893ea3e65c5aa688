// One flow run: facts, error, task graph, timeline, task runs, event, logs, retry.
import { h, patch } from "../dom.js";
import { shortId, fmtTime, fmtDuration, runDuration, pretty } from "../format.js";
import { REPLAYABLE, badge, legend } from "../states.js";
import { api } from "../api.js";
import { live } from "../live.js";
import { folded, fact } from "../widgets.js";
import { taskGraph, gantt } from "../graph.js";

export class RunView {
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
    // Retry resumes: completed task runs are reused; a full re-run calls every task again.
    // No button where the server would refuse (retried already, not a run): it says why.
    const refused = REPLAYABLE.has(run.state_type) ? run.retry_refused : null;
    const retry = REPLAYABLE.has(run.state_type) && !refused
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
      h("div", { id: "retry-notice" }, this.notice()
        || (refused ? h("div", { class: "notice", id: "retry-refused" }, `No retry: ${refused}.`) : null)),
      h("div", { class: "panel facts" },
        fact("Name", run.name || "–"),
        fact("Created", fmtTime(run.created_at)),
        fact("Started", fmtTime(run.started_at)),
        fact("Ended", fmtTime(run.ended_at)),
        fact("Duration", fmtDuration(runDuration(run))),
        fact("Attempts", run.run_count),
        fact("Worker", run.worker_id || "–"),
        run.retry_of ? fact("Retry of", runLink(run, run.retry_of, "retry-of")) : null,
        run.resumed_from ? fact("Resumed from", runLink(run, run.resumed_from, "resumed-from")) : null,
        run.linked_run_id ? fact("Linked run", runLink(run, run.linked_run_id, "linked-run")) : null,
        run.parent_flow_run_id ? fact("Parent run", runLink(run, run.parent_flow_run_id)) : null,
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
      }, shortId(t.reused_from_run))] : run.pruned.includes(t.reused_from) ? [" from ", h("span", {
        class: "muted pruned reused-from-pruned", title: `task run ${t.reused_from}: deleted by retention`,
      }, "a pruned run")] : null),
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

// A link to a run this one names, or "pruned" (no link) when retention deleted it.
function runLink(run, id, elementId = undefined) {
  if (run.pruned.includes(id)) {
    return h("span", { class: "muted pruned", id: elementId, title: `run ${id}: deleted by retention` },
      `${shortId(id)} (pruned)`);
  }
  return h("a", { href: `#/runs/${id}`, id: elementId }, shortId(id));
}

export function logTable(logs, names) {
  if (!logs.length) return h("p", { class: "muted" }, "No logs.");
  return h("table", { id: "log-table" },
    h("thead", {}, h("tr", {}, ["Time", "Level", "Where", "Message"].map((t) => h("th", {}, t)))),
    h("tbody", {}, logs.map((entry) => h("tr", {},
      h("td", { class: "mono" }, new Date(entry.timestamp).toLocaleTimeString()),
      h("td", { class: entry.level >= 40 ? "error-text" : "" }, entry.level_name),
      h("td", {}, entry.task_run_id ? names[entry.task_run_id] || shortId(entry.task_run_id) : "flow"),
      h("td", { class: "mono" }, entry.message)))));
}
