"""InFlight: everything a runner has taken and not finished with, changed only here.

Partitions (their offset trackers, finished runs kept for dedupe, their
runs), the per-key queues that keep one key's events in order, the count of
events in flight, and the unpartitioned events waiting to be acknowledged. The
runner asks; this module keeps the books consistent (a count is never
adjusted anywhere else). The runs themselves are tasks of the runner's
`RunGroup` (eventflow/_runtime/_run_group.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._interruption import CancelReason
from .._store._runstore import FinishedRun
from ._delivery import Delivery, partition_of
from ._offsets import OffsetTracker
from ._run_group import RunGroup, Runs
from ._source import Event, Partition

_NOTHING_NEXT: tuple[None, tuple[()]] = (None, ())
"""`InFlight.finish`'s answer when no queued event starts and none is dropped."""


@dataclass(slots=True)
class PartitionState:
    tracker: OffsetTracker
    done: dict[int, FinishedRun]
    """Runs already ended at offsets ahead (a restart's redeliveries), by offset."""
    runs: Runs = field(default_factory=Runs)
    """Its runs in flight (a batch's too)."""
    stopped: bool = False
    """A run failed under on_failure="stop" (or handling an event failed): nothing more starts."""
    closing: bool = False
    """Being revoked: finishing runs start no queued successors."""
    stored: int | None = None
    reading: bool = False
    """An event arrived: finished runs before where the source reads are no longer kept."""


class InFlight:
    """The one owner of a runner's in-flight state (see the module)."""

    def __init__(self, name: str, *, key_ordering: bool) -> None:
        self.name = name
        self.key_ordering = key_ordering
        self.count = 0
        """Events taken and not finished with, waiting ones included."""
        self.stopping = False
        self.partitions: dict[Partition, PartitionState] = {}
        self._keys: dict[tuple[Partition | None, str], deque[Delivery]] = {}
        self.group = RunGroup(name)
        """The task group that owns the runs (opened by `App.serve`)."""
        self.unacked: list[Event] = []
        """Unpartitioned events done with, to acknowledge once their runs are stored."""

    def stop(self) -> None:
        """The worker stops: no event starts any more; queued ones are dropped as runs end."""
        self.stopping = True

    # -- partitions --------------------------------------------------------------------

    def assign(self, partition: Partition, start: int | None, done: dict[int, FinishedRun]) -> None:
        self.partitions[partition] = PartitionState(OffsetTracker(start), done, stored=start)

    def accept(self, event: Event, previous: FinishedRun | None = None) -> Delivery | None:
        """Count a delivered event in; None when it is not ours to run (or a redelivery).

        `previous` is an unpartitioned event's run that already ended; a
        partition's come from the finished runs loaded at assignment.
        """
        partition: Partition | None = None
        if event.partition is not None:
            partition = (event.stream or "", event.partition)
            state = self.partitions.get(partition)
            if state is None or state.stopped or event.offset is None:
                return None  # not (or no longer) ours: the next owner reads it again
            if not state.tracker.delivered(event.offset):
                return None
            if not state.reading:
                # the source starts here (a new group may start at the end): the
                # finished runs of earlier offsets can never be needed
                state.reading = True
                state.done = {o: r for o, r in state.done.items() if o >= event.offset}
            previous = state.done.pop(event.offset, None)
        self.count += 1
        return Delivery(event, partition, previous)

    def stop_partition(self, event: Event) -> None:
        """Nothing more starts on the event's partition (until a restart reads it again)."""
        partition = partition_of(event)
        if partition is not None and (state := self.partitions.get(partition)) is not None:
            state.stopped = True

    def abandoning(self, event: Event) -> bool:
        """The event must not start any more: stopping, or its partition is going away."""
        if self.stopping:
            return True
        partition = partition_of(event)
        if partition is None:
            return False
        state = self.partitions.get(partition)
        return state is None or state.closing or state.stopped

    def paused(self, assigned: Iterable[Partition], bound: int) -> set[Partition]:
        """Of `assigned`, the partitions stopped or at `bound` runs in flight."""
        result = set()
        for partition in assigned:
            state = self.partitions.get(partition)
            if state is not None and (state.stopped or state.tracker.in_flight >= bound):
                result.add(partition)
        return result

    def close(self, partitions: Iterable[Partition]) -> dict[Partition, PartitionState]:
        """Partitions being revoked: their finishing runs start no queued successors."""
        states = {p: s for p in partitions if (s := self.partitions.get(p)) is not None}
        for state in states.values():
            state.closing = True
        return states

    def drop_queued(self, partitions: Iterable[Partition]) -> list[Delivery]:
        """Forget the events queued behind their keys on `partitions` (never started)."""
        wanted = set(partitions)
        dropped: list[Delivery] = []
        for key in [k for k in self._keys if k[0] in wanted]:
            queue = self._keys.pop(key)
            self.count -= len(queue)
            dropped.extend(queue)
        return dropped

    def remove(self, partitions: Iterable[Partition]) -> None:
        for partition in partitions:
            self.partitions.pop(partition, None)

    def advanced(self, states: Mapping[Partition, PartitionState]) -> dict[Partition, int]:
        """Of `states`, the offsets that may be stored now and are not yet."""
        advanced: dict[Partition, int] = {}
        for partition, state in states.items():
            committable = state.tracker.committable
            if committable is not None and committable != state.stored:
                advanced[partition] = committable
        return advanced

    def mark_stored(self, offsets: Mapping[Partition, int]) -> None:
        for partition, offset in offsets.items():
            if (state := self.partitions.get(partition)) is not None:
                state.stored = offset

    def stored_offsets(self) -> dict[Partition, int]:
        """The offsets stored with the runs, per partition of ours that has one."""
        return {p: s.stored for p, s in self.partitions.items() if s.stored is not None}

    # -- runs ----------------------------------------------------------------------------

    def enter(self, delivery: Delivery) -> bool:
        """True when the event may start now; False when it queued behind its key's run."""
        key = delivery.event.key
        if key is None or not self.key_ordering:
            return True
        chain = (delivery.partition, key)
        queue = self._keys.get(chain)
        if queue is not None:
            queue.append(delivery)
            return False
        self._keys[chain] = deque()
        return True

    def start(
        self, delivery: Delivery, work: Coroutine[Any, Any, None], name: str | None = None
    ) -> None:
        """Run `work` for the delivery, counted in its partition's runs (if it has one)."""
        partition = delivery.partition
        self.group.start(
            work, () if partition is None else (self.partitions[partition].runs,), name
        )

    def spawn(
        self,
        work: Coroutine[Any, Any, None],
        partitions: Iterable[Partition] = (),
        *,
        counted: bool = False,
    ) -> None:
        """Run `work` beside the events' runs (a batch, a replay): drained and revoked with them.

        `counted` counts it as one event in flight while it runs (a replay).
        """
        within = tuple(s.runs for p in partitions if (s := self.partitions.get(p)) is not None)
        task = self.group.start(work, within).task
        if counted and task is not None:
            self.count += 1
            task.add_done_callback(self._uncount)

    def _uncount(self, _task: object) -> None:
        self.count -= 1

    def finish(
        self, delivery: Delivery, finished: bool, *, chained: bool = True
    ) -> tuple[Delivery | None, Sequence[Delivery]]:
        """Account for a run that ended; `finished` lets its offset advance.

        Returns the next event of its key to start, if any, and the queued
        events dropped (their partition closing or stopped, or the worker
        stopping: whoever owns the partition next reads them again).
        `chained` is False for an event that never entered its key's queue.
        """
        event = delivery.event
        self.count -= 1
        partition = delivery.partition
        closing = self.stopping
        if partition is not None:
            state = self.partitions.get(partition)
            if state is not None and event.offset is not None:
                closing = closing or state.closing
                if finished:
                    state.tracker.finished(event.offset)
                else:
                    state.tracker.in_flight -= 1
        elif finished:
            self.unacked.append(event)
        if event.key is None or not self.key_ordering or not chained:
            return _NOTHING_NEXT
        chain = (partition, event.key)
        queue = self._keys.get(chain)
        if queue is None:
            return _NOTHING_NEXT
        if closing or (not finished and partition is not None):
            self.count -= len(queue)
            if partition is not None and (held := self.partitions.get(partition)) is not None:
                held.tracker.in_flight -= len(queue)
            del self._keys[chain]
            return None, list(queue)
        if queue:
            return queue.popleft(), ()
        del self._keys[chain]
        return _NOTHING_NEXT

    def runs(self, partitions: Iterable[Partition] | None = None) -> list[Runs]:
        """The runs in flight of `partitions`, or all of them (the runner's own too)."""
        if partitions is None:
            return [self.group.every]
        return [s.runs for p in partitions if (s := self.partitions.get(p)) is not None]

    async def wait(
        self, partitions: Iterable[Partition] | None, timeout: float, why: CancelReason
    ) -> int:
        """Wait up to `timeout` for the runs of `partitions` (all: None); cancel the rest,
        saying `why` (e.g. `FENCED_OUT`). Returns how many were cancelled.
        """
        return await self.group.finish(self.runs(partitions), timeout, why)

    def take_unacked(self) -> list[Event]:
        events, self.unacked = self.unacked, []
        return events
