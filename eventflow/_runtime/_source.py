"""The interfaces between the runtime and connectors.

A connector implements `Source` (and `Sink` for publishing); the runtime hands
each source an `EventSink`, its side of the conversation. The runtime never
imports a connector.
"""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ._liveness import Outage

Partition = tuple[str, int]
"""A partition of a stream: (stream name, partition number), e.g. ("orders", 3)."""


@dataclass(slots=True)
class Event:
    """One incoming event.

    `id` is its stable identity (Kafka: topic/partition/offset; HTTP: an id
    field or a content hash). Events of a partitioned source carry `stream`,
    `partition` and `offset`, and are acknowledged by committing offsets; the
    others are acknowledged one by one with `Source.ack`.
    """

    id: str
    value: bytes
    key: str | None = None
    stream: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp: float | None = None
    headers: Sequence[tuple[str, bytes]] = field(default_factory=tuple)


class EventSink(ABC):
    """The runtime's side of a source: where events go and what to fetch."""

    @property
    @abstractmethod
    def stopping(self) -> bool:
        """True once the worker is shutting down: stop fetching and return from `run`."""

    @abstractmethod
    async def deliver(self, events: Sequence[Event]) -> None:
        """Take events to run; returns without waiting for their runs."""

    @abstractmethod
    def paused(self, assigned: Iterable[Partition]) -> set[Partition]:
        """Of the `assigned` partitions, those to pause now (bound reached, store down)."""

    @abstractmethod
    def accepting(self) -> bool:
        """False while an unpartitioned source should not fetch (bound reached, store down)."""

    @abstractmethod
    async def assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Partitions were assigned: returns the offsets stored with the runs, to seek to."""

    @abstractmethod
    async def lease(self, name: str, ttl: float) -> bool:
        """Take or renew lease `name` in the run store for `ttl` seconds; True while held.

        For work only one worker of an app may do at a time (a schedule's ticks);
        False also when the store cannot be reached.
        """

    @abstractmethod
    async def release_lease(self, name: str) -> None:
        """Give lease `name` up now, so another worker need not wait for it to expire."""

    @abstractmethod
    async def revoked(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Partitions are being taken away: finish or abandon their runs, store their offsets.

        Returns the offsets stored, for the source to commit to the broker.
        """

    async def checkpoint(self) -> str | None:
        """What the source last saved with `save_checkpoint`, from the store; None if nothing."""
        return None

    def save_checkpoint(self, value: str) -> None:  # noqa: B027 - optional: keeps nothing
        """Save where an unpartitioned source resumes after a restart (an HTTP cursor).

        Stored with the run records written before it. Save a position once the
        events before it are acknowledged (`Source.ack`): their runs are durable.
        """


class Sink(ABC):
    """Somewhere a flow (or the dead-letter policy) publishes messages."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect; called before the first `send`."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Flush and disconnect."""

    @abstractmethod
    async def send(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Publish one message; returns once the destination has acknowledged it."""


class Source(ABC):
    """An async stream of events with acknowledgement.

    `group_id` names the consumer (Kafka: the consumer group); with it, the
    runtime stores committed offsets in the run store, in the same transaction
    as the runs, and the source seeks to them on assignment.
    """

    name: str = "source"
    group_id: str | None = None
    finite: bool = False
    """True for a source whose `run` returns once it delivered everything (a file, an
    offset range): that ends it. Any other source's `run` returning is a failure, and
    the runtime starts it again."""
    messaging_system: str | None = None
    """OpenTelemetry's `messaging.system` of the runs of its events ("kafka"), if any."""
    errors: int = 0
    """Fetch errors so far (exported as `eventflow_source_errors_total`); see `record_error`."""
    last_error: str | None = None
    last_error_at: float | None = None

    def record_error(self, error: BaseException | str) -> None:
        """Count a fetch error the source recovers from (it backs off and goes on).

        The first error of a run of them is logged (WARNING), then a summary
        every 30 s while they go on; `record_ok` ends the run (one INFO line).
        Until then the subscription's state is `reconnecting`.
        """
        self.errors += 1
        self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.last_error_at = time.time()
        self.outage.failed(self.last_error, self.last_error_at)

    def record_ok(self) -> None:
        """A fetch (or a connection check) succeeded: an outage, if any, is over."""
        outage = self.__dict__.get("outage")
        if outage is not None and outage.active:
            outage.recovered()

    @property
    def failing(self) -> bool:
        """True from a `record_error` until the next `record_ok`."""
        outage = self.__dict__.get("outage")
        return outage is not None and outage.active

    @functools.cached_property
    def outage(self) -> Outage:
        """The quiet log of this source's failures (see `record_error`)."""
        return Outage(self.name)

    def lag(self) -> Mapping[Partition, int]:
        """Events behind the end of each assigned partition, where the source knows it."""
        return {}

    def positions(self) -> Mapping[Partition, int]:
        """The next offset the source delivers from each assigned partition, where it knows it."""
        return {}

    @abstractmethod
    async def run(self, sink: EventSink) -> None:
        """Fetch events and `deliver` them until `sink.stopping` (or cancellation)."""

    async def commit(self, offsets: Mapping[Partition, int]) -> None:  # noqa: B027
        """Offsets (next to read) whose runs are durable in the store; tell the broker."""

    async def ack(self, events: Sequence[Event]) -> None:  # noqa: B027
        """Unpartitioned events whose runs are durable in the store."""

    async def close(self) -> None:  # noqa: B027
        """Disconnect (Kafka: leave the group); called after the final commit."""

    def settled(self, event: Event, finished: bool) -> None:  # noqa: B027 - optional hook
        """The runtime is done with `event`: its outcome is recorded and its failure policy
        applied, though perhaps not yet durable (`commit`/`ack` say that).

        `finished` is False when the event stopped there (its partition stopped, or
        the worker is stopping). For sources that report outcomes (eventflow.testing).
        """

    def dead_letter_sink(self) -> Sink | None:
        """Where failed events go when the subscription does not name a sink."""
        return None
