// The hash router's addresses: read the current one, rewrite its query in place.
import { query } from "./api.js";

export function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, params: new URLSearchParams(q || "") };
}

export function setHashParams(base, params) {
  const text = query(params);
  history.replaceState(null, "", `#/${base}${text}`);
}

export function subscriptionHref(name) {
  return `#/subscriptions/${encodeURIComponent(name)}`;
}
