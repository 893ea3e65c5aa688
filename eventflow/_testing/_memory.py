"""A source and a sink in memory: what eventflow.testing puts in place of the broker.

`MemorySource` is partitioned like a Kafka topic of one partition: offsets
from 0, stored with the runs, paused at the in-flight bound. It tells whoever
appended an event when the runtime is done with it (`Source.done_with`), so a
test can wait for one event's outcome instead of polling for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from .._errors import EventflowError
from .._runtime._source import Event, EventSink, Sink, Source

_PAUSED_POLL = 0.005
"""Seconds between looks at a paused partition (Kafka's consumer polls too)."""

_IDLE_POLL = 0.02
"""Seconds between looks at `sink.stopping` while no event waits (a source ends only then)."""


class EventNotRunError(EventflowError):
    """The event was not run: its partition stopped before it, or the app stopped."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the failure policy sent to the dead-letter sink: the event, with its error."""

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for header, value in self.headers:
            if header == name:
                return value.decode("utf-8", "replace")
        return None

    @property
    def error(self) -> str | None:
        """Why the run failed (the `eventflow-error` header)."""
        return self.header("eventflow-error")

    @property
    def flow_run_id(self) -> str | None:
        return self.header("eventflow-flow-run-id")

    @property
    def event_id(self) -> str | None:
        return self.header("eventflow-event-id")


class MemorySink(Sink):
    """Keeps what is sent to it, in order."""

    def __init__(self) -> None:
        self.messages: list[DeadLetter] = []

    async def send(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        self.messages.append(DeadLetter(value, key, tuple(headers)))


class MemorySource(Source):
    """One partition in memory, fed by `append`; each append gets a future of its outcome.

    The future's result is None once the runtime is done with the event (see
    `Source.done_with`), or why the event will never run. (A result, not an
    exception: nobody may be waiting for it.)
    """

    def __init__(self, name: str, *, group_id: str | None, key_ordering: bool = True) -> None:
        self.name = name
        self.stream = name
        self.group_id = group_id
        self.key_ordering = key_ordering
        self.stopped_at: Event | None = None
        """The event whose failure stopped the partition (`on_failure="stop"`), if any."""
        self._next_offset = 0
        self._pending: deque[Event] = deque()
        self._outcomes: dict[str, tuple[Event, asyncio.Future[str | None]]] = {}
        self._wake = asyncio.Event()
        self._closing = False

    def append(
        self, value: bytes, *, key: str | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> tuple[Event, asyncio.Future[str | None]]:
        """Add an event at the end of the partition (call on the runtime's event loop)."""
        if self._closing:
            raise EventNotRunError(f"{self.name}: the app is stopping; nothing more is run")
        if self.stopped_at is not None:
            raise EventNotRunError(self._stopped_message())
        offset = self._next_offset
        self._next_offset += 1
        event = Event(
            f"{self.stream}/0/{offset}", value, key, self.stream, 0, offset, time.time(), headers
        )
        future = asyncio.get_running_loop().create_future()
        self._outcomes[event.id] = (event, future)
        self._pending.append(event)
        self._wake.set()
        return event, future

    async def run(self, sink: EventSink) -> None:
        partition = (self.stream, 0)
        await sink.assigned([partition])
        while not sink.stopping:
            if self._pending and self.stopped_at is None and not sink.paused([partition]):
                # one at a time: the in-flight bound holds exactly (Kafka overshoots by a fetch)
                await sink.deliver([self._pending.popleft()])
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), _PAUSED_POLL if self._pending else _IDLE_POLL
                )

    def done_with(self, event: Event, finished: bool) -> None:
        outcome = self._outcomes.pop(event.id, None)
        if outcome is not None and not outcome[1].done():
            outcome[1].set_result(None)
        if not finished and not self._closing and self.stopped_at is None:
            self._stop_at(event)

    def _stop_at(self, event: Event) -> None:
        """The partition stopped at `event`: fail the outcomes of the events that never run.

        Those are the ones not delivered yet, and (with key ordering) the later
        ones of its key, which waited behind it and are dropped. Delivered events
        of other keys are in flight and end as usual.
        """
        self.stopped_at = event
        undelivered = {queued.id for queued in self._pending}
        self._pending.clear()
        message = self._stopped_message()
        for queued, future in list(self._outcomes.values()):
            behind = (
                self.key_ordering
                and queued.key is not None
                and queued.key == event.key
                and (queued.offset or 0) > (event.offset or 0)
            )
            if behind or queued.id in undelivered:
                self._fail(queued, future, message)

    def _fail(self, event: Event, future: asyncio.Future[str | None], reason: str) -> None:
        self._outcomes.pop(event.id, None)
        if not future.done():
            future.set_result(reason)

    def _stopped_message(self) -> str:
        stopped = self.stopped_at
        assert stopped is not None
        return (
            f"{self.name}: the partition stopped at event {stopped.id} (its run failed with"
            " on_failure='stop', or handling it raised); events after it are not run"
        )

    def stop_taking(self) -> None:
        """Take no more events (the app is stopping); what is in flight still ends."""
        self._closing = True

    def abandon(self) -> None:
        """The app has stopped: the events that never ended never will."""
        for event, future in list(self._outcomes.values()):
            self._fail(event, future, f"{self.name}: the app stopped before event {event.id} ended")
