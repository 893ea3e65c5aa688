"""Notifications when runs fail: a webhook notifier that never holds a run up.

A `WebhookNotifier` is a flow hook (`@flow(on_failure=[notifier], on_crashed=[notifier])`)
and an app-wide notifier (`App(notifiers=[notifier])`, or per subscription). Either
way `notify` only queues the message; a daemon thread of the notifier posts it,
retrying with backoff (honouring `Retry-After`), so a slow or dead receiver
costs the runs nothing. The default body is Slack-compatible (`{"text": ...}`).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ._extras import missing_extra
from ._retries import parse_retry_after
from ._tracing import TRACING

try:
    import httpx
except ImportError:  # the `http` extra: WebhookNotifier says so when it is built
    httpx = None  # type: ignore[assignment]

logger = logging.getLogger("eventflow.notify")


@dataclass(frozen=True, slots=True)
class Notification:
    """What a notifier is told about a run that ended badly, or a dataset late or fresh again.

    A dataset notice (`dataset` set, `state` "LATE" or "FRESH") has the dataset's
    name as `flow_name`, no run id, and names the flows (and datasets) downstream
    of it, transitively, in `affected_flows` (`affected_datasets`).
    """

    flow_name: str
    flow_run_id: str
    run_name: str | None
    state: str
    state_name: str
    error: str | None
    event_id: str | None = None
    event_key: str | None = None
    url: str | None = None
    dataset: str | None = None
    affected_flows: tuple[str, ...] = ()
    affected_datasets: tuple[str, ...] = ()


def slack_body(notification: Notification) -> dict[str, Any]:
    """A Slack incoming-webhook body (`text`, mrkdwn), with the details under `eventflow`."""
    n = notification
    if n.dataset is not None:
        return _dataset_body(n)
    lines = [f":rotating_light: *{n.flow_name}* run `{n.run_name or n.flow_run_id}` {n.state_name}"]
    if n.error:
        lines.append(f"```{n.error[:1500]}```")
    if n.event_key or n.event_id:
        lines.append(f"event `{n.event_id}`" + (f" key `{n.event_key}`" if n.event_key else ""))
    if n.url:
        lines.append(f"<{n.url}|open the run>")
    return {"text": "\n".join(lines), "eventflow": asdict(n)}


def _dataset_body(n: Notification) -> dict[str, Any]:
    icon = ":hourglass:" if n.state == "LATE" else ":white_check_mark:"
    lines = [f"{icon} dataset *{n.dataset}* {n.state_name.lower()}"]
    if n.error:
        lines.append(n.error)
    if n.affected_flows:
        lines.append("affected flows: " + ", ".join(f"`{f}`" for f in n.affected_flows))
    if n.url:
        lines.append(f"<{n.url}|open the lineage>")
    return {"text": "\n".join(lines), "eventflow": asdict(n)}


class WebhookNotifier:
    """POST a JSON body to `url` for each failed (or crashed) run.

    `body` turns a `Notification` into the JSON to send (default `slack_body`).
    Failed deliveries (connection errors, timeouts, 5xx, 429) are retried up to
    `retries` times with exponential backoff; beyond `max_queued` waiting
    notifications new ones are dropped and logged, never blocking.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: Callable[[Notification], Any] = slack_body,
        timeout: float = 5.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_queued: int = 1000,
        ui_url: str | None = None,
    ) -> None:
        if httpx is None:
            raise missing_extra("httpx", "http", "WebhookNotifier")
        self.url = url
        self.headers = dict(headers or {})
        self.body = body
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.ui_url = ui_url or os.environ.get("EVENTFLOW_UI_URL")
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self._queue: queue.Queue[tuple[Notification, dict[str, str]] | None] = queue.Queue(
            max_queued
        )
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- as a flow hook ----------------------------------------------------------------

    def __call__(self, flow: Any, run: Any, state: Any) -> None:
        """`on_failure` / `on_crashed` hook: (flow, RunInfo, State)."""
        self.notify(
            Notification(
                flow_name=flow.name,
                flow_run_id=run.id,
                run_name=run.name,
                state=state.type.value,
                state_name=state.name,
                error=state.message,
            )
        )

    @property
    def __name__(self) -> str:  # hooks are logged by name
        return f"WebhookNotifier({self.url})"

    # -- queueing and sending -------------------------------------------------------------

    def notify(self, notification: Notification) -> None:
        """Queue `notification` for sending; returns at once.

        While tracing is on, the POST carries the trace context current here (a
        flow hook's: the run's span).
        """
        if self.ui_url and notification.url is None:
            page = "lineage" if notification.dataset else f"runs/{notification.flow_run_id}"
            url = f"{self.ui_url.rstrip('/')}/#/{page}"
            notification = _with_url(notification, url)
        self._ensure_thread()
        try:
            self._queue.put_nowait((notification, TRACING.current_headers()))
        except queue.Full:
            self.dropped += 1
            logger.error("notification queue full; dropped %s", notification.flow_run_id)

    def close(self, timeout: float = 10.0) -> None:
        """Send what is queued (within `timeout`), then stop the sender thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:  # the sender is stuck behind a full queue: give up on the rest
            logger.error("notifier %s: %d notifications not sent", self.url, self._queue.qsize())
            return
        thread.join(timeout)

    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._send_loop, name="eventflow-notify", daemon=True
                )
                self._thread.start()

    def _send_loop(self) -> None:
        with httpx.Client(timeout=self.timeout, headers=self.headers) as client:
            while True:
                queued = self._queue.get()
                if queued is None:
                    return
                notification, trace_headers = queued
                try:
                    self._deliver(client, notification, trace_headers)
                except Exception:  # a bad body or URL: this one fails, the thread goes on
                    self.failed += 1
                    logger.exception(
                        "webhook %s: the notification of run %s failed",
                        self.url,
                        notification.flow_run_id,
                    )

    def _deliver(
        self, client: httpx.Client, notification: Notification, headers: dict[str, str]
    ) -> None:
        body = self.body(notification)
        delay = self.backoff
        for attempt in range(self.retries + 1):
            wait = min(delay * random.uniform(1.0, 1.5), self.max_backoff)
            try:
                response = client.post(self.url, json=body, headers=headers or None)
                if response.status_code < 300:
                    self.sent += 1
                    return
                if response.status_code != 429 and response.status_code < 500:
                    logger.error(
                        "webhook %s refused the notification of run %s: HTTP %d",
                        self.url,
                        notification.flow_run_id,
                        response.status_code,
                    )
                    self.failed += 1
                    return  # a 4xx other than 429 will not get better
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                wait = max(wait, retry_after or 0.0)  # the receiver's word, over max_backoff
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                problem = f"{type(error).__name__}: {error}"
            if attempt < self.retries:
                logger.warning("webhook %s: %s; retrying in %.1fs", self.url, problem, wait)
                time.sleep(wait)
                delay *= 2
        self.failed += 1
        logger.error(
            "webhook %s: gave up on the notification of run %s after %d attempts",
            self.url,
            notification.flow_run_id,
            self.retries + 1,
        )


def _with_url(notification: Notification, url: str) -> Notification:
    fields = asdict(notification)
    fields["url"] = url
    return Notification(**fields)
