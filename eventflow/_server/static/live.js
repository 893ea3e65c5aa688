// Live refresh: the current view re-reads the API every 1.5 s (not while the tab is
// hidden or paused), one refresh at a time.
import { Unauthorized } from "./api.js";

export const REFRESH_MS = 1500;

export const live = { paused: false, view: null, timer: null, busy: false, again: false, count: 0 };

export function setStatus(kind, text) {
  const el = document.getElementById("live-status");
  el.className = `live-status ${kind}`;
  el.textContent = text;
}

export async function tick() {
  if (live.busy) {
    live.again = true; // a filter changed mid-refresh: refresh once more right after
    return;
  }
  if (!live.view || document.hidden) return;
  live.busy = true;
  const view = live.view;
  try {
    await view.refresh();
    live.count += 1;
    document.body.dataset.refreshes = live.count; // tests wait on refreshes, not on time
    if (view === live.view) {
      setStatus(live.paused ? "paused" : "ok", `${live.paused ? "paused" : "live"} · ${new Date().toLocaleTimeString()}`);
    }
  } catch (error) {
    if (error instanceof Unauthorized) setStatus("error", "token needed");
    else setStatus("error", `error: ${error.message}`);
  } finally {
    live.busy = false;
    if (live.again) {
      live.again = false;
      tick();
    }
  }
}

export function startLive() {
  clearInterval(live.timer);
  live.timer = live.paused ? null : setInterval(tick, REFRESH_MS);
}
