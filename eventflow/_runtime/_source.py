"""The connector contract: what a source yields, how it acknowledges, how it reports health.

A connector subclasses `Source` (and `Sink` to publish) and talks to the
runtime only through the `EventSink` handed to `Source.run`; all of it is public
in `eventflow.runtime`, documented in docs/guides/writing-a-connector.md. The
runtime never imports a connector, and what it keeps beside a source (health
bookkeeping in `_health.py`, the test harness's hook) is not part of the contract.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .._partition import Partition as Partition  # re-exported: the runtime imports it from here
from ._health import SourceHealth


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


class DurableState:
    """What a source keeps in the run store, across restarts and workers: where it
    resumes (`checkpoint`) and leases. A source reaches it as `sink.durable`.

    This base keeps nothing: no checkpoint, and every lease held (one worker, no
    store: a test's sink). The runtime's is the run store's.
    """

    async def checkpoint(self) -> str | None:
        """What the source last saved with `save_checkpoint`; None if nothing."""
        return None

    def save_checkpoint(self, value: str) -> None:
        """Save where an unpartitioned source resumes after a restart (an HTTP cursor).

        Stored with the run records written before it. Save a position once the
        events before it are acknowledged (`Source.ack`): their runs are durable.
        """

    async def lease(self, name: str, ttl: float) -> bool:
        """Take or renew lease `name` for `ttl` seconds; True while held.

        For work only one worker of an app may do at a time (a schedule's ticks);
        False also when the store cannot be reached.
        """
        return True

    async def release_lease(self, name: str) -> None:
        """Give lease `name` up now, so another worker need not wait for it to expire."""


class EventSink(ABC):
    """The runtime's side of a source, handed to `Source.run`: where events go.

    Every source uses `stopping` and `deliver`. A partitioned source (Kafka)
    also reports `assigned` and `revoked` partitions and pauses those `paused`
    names; an unpartitioned one fetches while `accepting()`. What a source keeps
    across restarts (a cursor, a lease) is in `durable`.
    """

    durable: DurableState = DurableState()
    """The source's checkpoint and leases (the runtime's: in the run store)."""

    # -- every source

    @property
    @abstractmethod
    def stopping(self) -> bool:
        """True once the worker is shutting down: stop fetching and return from `run`."""

    @abstractmethod
    async def deliver(self, events: Sequence[Event]) -> None:
        """Take events to run; returns without waiting for their runs."""

    # -- a partitioned source (events with `stream`, `partition` and `offset`)

    @abstractmethod
    async def assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Partitions were assigned: returns the offsets stored with the runs, to seek to."""

    @abstractmethod
    async def revoked(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Partitions are being taken away: finish or abandon their runs, store their offsets.

        Returns the offsets stored, for the source to commit to the broker.
        """

    @abstractmethod
    def paused(self, assigned: Iterable[Partition]) -> set[Partition]:
        """Of the `assigned` partitions, those to pause now (bound reached, store down)."""

    # -- an unpartitioned source (events acknowledged with `Source.ack`)

    @abstractmethod
    def accepting(self) -> bool:
        """False while an unpartitioned source should not fetch (bound reached, store down)."""


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
    """An async stream of events with acknowledgement: what a connector implements.

    - What it yields: `run` fetches events and hands them to `sink.deliver` until
      `sink.stopping`.
    - How it acknowledges: the runtime calls `commit` (partitioned events: the
      next offsets, their runs durable) or `ack` (the others, one by one).
    - How it reports health: `record_error` for a fetch error it recovers from,
      `record_ok` once fetching works again.

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

    # -- what it yields

    @abstractmethod
    async def run(self, sink: EventSink) -> None:
        """Fetch events and `deliver` them until `sink.stopping` (or cancellation)."""

    # -- how it acknowledges

    async def commit(self, offsets: Mapping[Partition, int]) -> None:  # noqa: B027
        """Offsets (next to read) whose runs are durable in the store; tell the broker."""

    async def ack(self, events: Sequence[Event]) -> None:  # noqa: B027
        """Unpartitioned events whose runs are durable in the store."""

    # -- how it reports health

    def record_error(self, error: BaseException | str) -> None:
        """Count a fetch error the source recovers from (it backs off and goes on).

        The first error of a run of them is logged (WARNING), then a summary
        every 30 s while they go on; `record_ok` ends the run (one INFO line).
        Until then the subscription's state is `reconnecting`.
        """
        self.health.failed(error)

    def record_ok(self) -> None:
        """A fetch (or a connection check) succeeded: an outage, if any, is over."""
        health = self.__dict__.get("health")
        if health is not None:
            health.recovered()

    @property
    def failing(self) -> bool:
        """True from a `record_error` until the next `record_ok`."""
        health = self.__dict__.get("health")
        return health is not None and health.failing

    @property
    def failing_since(self) -> float | None:
        """When the current run of errors began (`time.time()`); None while it works."""
        health = self.__dict__.get("health")
        return None if health is None else health.outage.since

    @property
    def errors(self) -> int:
        """Fetch errors recorded so far (exported as `eventflow_source_errors_total`)."""
        health = self.__dict__.get("health")
        return 0 if health is None else health.errors

    @property
    def last_error(self) -> str | None:
        """The last error recorded, as text."""
        health = self.__dict__.get("health")
        return None if health is None else health.last_error

    @property
    def last_error_at(self) -> float | None:
        health = self.__dict__.get("health")
        return None if health is None else health.last_error_at

    # -- optional reports and hooks

    def lag(self) -> Mapping[Partition, int]:
        """Events behind the end of each assigned partition, where the source knows it."""
        return {}

    def positions(self) -> Mapping[Partition, int]:
        """The next offset the source delivers from each assigned partition, where it knows it."""
        return {}

    def dead_letter_sink(self) -> Sink | None:
        """Where failed events go when the subscription does not name a sink."""
        return None

    async def close(self) -> None:  # noqa: B027
        """Disconnect (Kafka: leave the group); called after the final commit."""

    # -- kept by the runtime, not part of the contract

    @functools.cached_property
    def health(self) -> SourceHealth:
        """The runtime's bookkeeping of this source's errors (see `record_error`)."""
        return SourceHealth(self.name)

    def done_with(self, event: Event, finished: bool) -> None:  # noqa: B027 - a runtime hook
        """The test harness's hook (eventflow.testing's in-memory source): the runtime is
        done with `event`, its outcome recorded though perhaps not yet durable.

        `finished` is False when the event stopped there (its partition stopped, or
        the worker is stopping). Connectors do not implement it.
        """
