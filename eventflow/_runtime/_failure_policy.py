"""Settling a run that did not complete: notifiers, then the failure policy.

`FailurePolicy.apply` dead-letters, skips or stops; it says whether the event
is done with (its offset may advance). Dead letters are retried with backoff
until they are sent (or the worker stops: the event is then read again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .._errors import describe_error
from .._notify import Notification
from .._retries import Backoff
from .._states import State
from ._liveness import Outage
from ._source import Event, Sink
from ._subscription import SOURCE_CALL_TIMEOUT, RunnerStats, Subscription

logger = logging.getLogger("eventflow.runtime")

DEAD_LETTER_RETRY = Backoff(initial=0.1, maximum=5.0, jitter=0.0)
"""Between attempts to send a dead letter while the sink is away."""


class FailurePolicy:
    """What happens after a run that did not complete (see the module)."""

    def __init__(
        self,
        subscription: Subscription,
        stats: RunnerStats,
        *,
        stop_partition: Callable[[Event], None],
        stopping: Callable[[], bool],
    ) -> None:
        self.subscription = subscription
        self.name = subscription.name
        self.stats = stats
        self._stop_partition = stop_partition
        self._stopping = stopping
        self._sink: Sink | None = None
        self._sink_started = False
        self.outage = Outage(f"{self.name}: dead-letter sink")

    def notify(self, event: Event, state: State) -> None:
        """Tell the subscription's notifiers of a run that ended badly."""
        if not self.subscription.notifiers:
            return
        notification = Notification(
            flow_name=self.subscription.flow.name,
            flow_run_id=state.run_id or "",
            run_name=None,
            state=state.type.value,
            state_name=state.name,
            error=state.message,
            event_id=event.id,
            event_key=event.key,
        )
        for notifier in self.subscription.notifiers:
            try:
                notifier.notify(notification)
            except Exception:
                logger.exception("%s: notifier %r failed", self.name, notifier)

    async def apply(self, event: Event, run_id: str | None, error: str | None) -> bool:
        """Dead-letter, skip or stop; True when the event is done with."""
        policy = self.subscription.on_failure
        if policy == "skip":
            return True
        if policy == "stop":
            if event.partition is not None:
                self._stop_partition(event)
                logger.error(
                    "%s: stopping partition %s[%s] at offset %s: run %s failed: %s",
                    self.name,
                    event.stream,
                    event.partition,
                    event.offset,
                    run_id,
                    error,
                )
            return False
        sink = self._target()
        if sink is None:
            logger.error("%s: no dead-letter sink; skipping failed event %s", self.name, event.id)
            return True
        return await self._dead_letter(
            sink, event, _headers(event, self.subscription, run_id, error)
        )

    async def _dead_letter(
        self, sink: Sink, event: Event, headers: list[tuple[str, bytes]]
    ) -> bool:
        failures = 0
        while True:
            try:
                async with asyncio.timeout(SOURCE_CALL_TIMEOUT):
                    if not self._sink_started:
                        await sink.start()
                        self._sink_started = True
                    await sink.send(
                        event.value, key=event.key.encode() if event.key else None, headers=headers
                    )
                self.outage.recovered()
                self.stats.dead_lettered += 1
                return True
            except asyncio.CancelledError:
                raise
            except Exception as send_error:
                if self._stopping():
                    logger.error(
                        "%s: dead letter for %s not sent before shutdown: %s",
                        self.name,
                        event.id,
                        describe_error(send_error),
                    )
                    return False
                self.outage.failed(f"send failed: {describe_error(send_error)}")
                failures += 1
                await asyncio.sleep(DEAD_LETTER_RETRY.delay(failures))

    def _target(self) -> Sink | None:
        """The subscription's dead-letter sink, else the source's; started when first used."""
        if self._sink is None:
            sub = self.subscription
            self._sink = sub.dead_letter or sub.source.dead_letter_sink()
        return self._sink

    async def stop(self) -> None:
        if self._sink is not None and self._sink_started:
            await self._sink.stop()
            self._sink_started = False


def _headers(
    event: Event, subscription: Subscription, run_id: str | None, error: str | None
) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = [
        *event.headers,
        ("eventflow-error", (error or "").encode()[:4000]),
        ("eventflow-flow", subscription.flow.name.encode()),
        ("eventflow-flow-run-id", (run_id or "").encode()),
        ("eventflow-event-id", event.id.encode()),
    ]
    if event.stream is not None:
        headers.append(("eventflow-original-topic", event.stream.encode()))
    if event.partition is not None:
        headers.append(("eventflow-original-partition", str(event.partition).encode()))
    if event.offset is not None:
        headers.append(("eventflow-original-offset", str(event.offset).encode()))
    return headers
