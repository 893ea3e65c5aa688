"""An alert as a flow: scrape a Prometheus endpoint, compare a rate with a threshold, notify.

    eventflow run examples/prometheus_alert.py:app

Scrapes METRICS_URL (default: an eventflow worker's own metrics,
http://127.0.0.1:9464/metrics) every 5 s; every sample of
`eventflow_flow_runs_total{state="FAILED"}` becomes a run of `check_failure_rate`,
which posts an alert to ALERT_WEBHOOK_URL (a Slack incoming webhook, or any
URL taking JSON) when failures come faster than ALERT_THRESHOLD per second.
Each check is a tracked run, so the alert history is in the store like any run.
"""

from __future__ import annotations

import os

import httpx

from connectors.prometheus import PrometheusScrapeSource
from eventflow import App, flow, get_run_logger, task


@task(retries=3, retry_delay_seconds=[1, 5])
def send_alert(text: str) -> None:
    url = os.environ.get("ALERT_WEBHOOK_URL")
    if not url:
        get_run_logger().warning("ALERT (no ALERT_WEBHOOK_URL set): %s", text)
        return
    httpx.post(url, json={"text": text}, timeout=10).raise_for_status()


@flow(name="check-failure-rate")
def check_failure_rate(
    name: str, labels: dict[str, str], value: float | None, rate: float | None = None
) -> str:
    threshold = float(os.environ.get("ALERT_THRESHOLD", "1.0"))
    if rate is None or rate <= threshold:  # the first scrape has no rate yet
        return "ok"
    flow_name = labels.get("flow", "?")
    send_alert(f":warning: flow `{flow_name}` fails {rate:.2f} runs/s (threshold {threshold:g}/s)")
    return "alerted"


app = App()
app.subscribe(
    PrometheusScrapeSource(
        os.environ.get("METRICS_URL", "http://127.0.0.1:9464/metrics"),
        interval=float(os.environ.get("SCRAPE_INTERVAL", "5")),
        metrics=["eventflow_flow_runs_total"],
        labels={"state": "FAILED"},
    ),
    check_failure_rate,
    on_failure="skip",
)
