// Run and subscription states: their colours, badges, chips and legends.
import { h } from "./dom.js";
import { query } from "./api.js";

export const REPLAYABLE = new Set(["FAILED", "CRASHED", "CANCELLED"]);
export const STATES = ["PENDING", "RUNNING", "RETRYING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"];
export const STATE_COLORS = {
  COMPLETED: "#2f9e44", FAILED: "#e03131", CRASHED: "#c2255c", CANCELLED: "#868e96",
  RUNNING: "#1c7ed6", RETRYING: "#f08c00", PENDING: "#adb5bd",
};

export function badge(state, label) {
  return h("span", { class: `badge ${state}` }, label || state);
}

export function legend() {
  return h("div", { class: "legend" }, STATES.map((st) => h("span", {}, h("i", { style: `background:${STATE_COLORS[st]}` }), st.toLowerCase())),
    h("span", {}, "- - - wait_for"));
}

export function stateLegend() {
  return h("div", { class: "legend" }, ["COMPLETED", "FAILED", "CRASHED", "CANCELLED", "RUNNING", "RETRYING", "PENDING"].map((st) =>
    h("span", {}, h("i", { style: `background:${STATE_COLORS[st]}` }), st.toLowerCase())));
}

export const SUBSCRIPTION_STATES = { running: "COMPLETED", reconnecting: "RETRYING", stalled: "FAILED", stopped: "CANCELLED" };

export function subscriptionState(state) {
  return h("span", { class: "sub-state", "data-state": state }, badge(SUBSCRIPTION_STATES[state] || "PENDING", state));
}

export function stateChips(states, flowName) {
  return h("div", { class: "chips" }, Object.entries(states).sort().map(([st, n]) =>
    h("a", { href: `#/runs${query({ flow: flowName, state: st })}` }, badge(st, `${st.toLowerCase()} ${n}`))));
}
