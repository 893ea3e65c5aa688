// Small page parts more than one view shows.
import { h } from "./dom.js";
import { fmtTime, ago } from "./format.js";
import { subscriptionHref } from "./nav.js";

// A traceback, folded until asked for (the fold survives live updates).
export function folded(id, label, text) {
  if (!text) return null;
  const lines = text.trimEnd().split("\n");
  return h("details", { class: "traceback", id, "data-key": id },
    h("summary", {}, `${label} (${lines.length} lines)`),
    h("pre", {}, text));
}

export function fact(label, value) {
  return h("div", {}, h("span", { class: "label" }, label), value);
}

export function tile(id, label, value, note) {
  return h("div", { class: "tile", id, "data-key": id },
    h("span", { class: "label" }, label), h("span", { class: "value" }, value), note ? h("span", { class: "note" }, note) : null);
}

export function sourcesTable(subscriptions) {
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
