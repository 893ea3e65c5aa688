// eventflow web UI: plain DOM in native ES modules, no build step. Every view re-reads
// the API while live updates are on (every 1.5 s, paused while the tab is hidden) and
// patches the page: a node whose tag, attributes and text did not change is left as it
// is, so what a user reads, selects or has folded open never jumps.
//
// This module is the entry point: the router and the page's controls. The views are in
// views/, one module each; dom, api, live, charts and graph are what they share.
import { TOKEN_KEY } from "./api.js";
import { live, setStatus, startLive, tick } from "./live.js";
import { parseHash } from "./nav.js";
import { DashboardView } from "./views/dashboard.js";
import { FlowView, FlowsView } from "./views/flows.js";
import { LineageView } from "./views/lineage.js";
import { RunView } from "./views/run.js";
import { RunsView } from "./views/runs.js";
import { SubscriptionView } from "./views/subscription.js";
import { WorkersView } from "./views/workers.js";

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
  else if (section === "lineage") view = new LineageView(main);
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
  document.getElementById("token-form").addEventListener("submit", () => {
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token-input").value);
    route();
  });
  document.getElementById("live-toggle").addEventListener("click", (event) => {
    live.paused = !live.paused;
    event.target.textContent = live.paused ? "Resume" : "Pause";
    setStatus(live.paused ? "paused" : "ok", live.paused ? "paused" : "live");
    startLive();
  });
  startLive();
  route();
});
