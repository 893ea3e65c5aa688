"""SubscriptionRunner: one source bound to one flow, with the delivery guarantees.

Every event becomes one flow run. Events with the same key run one after the
other, different keys concurrently; the number of runs in flight is bounded
(globally and per partition) and the source pauses partitions at the bound. A
partition's offset only advances over the contiguous prefix of finished
events, and is stored in the run store in the same transaction as those runs
(the writer's queue keeps the order), then committed to the broker.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from .._engine import EventInfo, run_flow
from .._errors import ParameterValidationError, WorkerStoppingError
from .._flows import Flow
from .._ids import new_id
from .._notify import Notification
from .._resume import Resume, ResumePlans
from .._states import State, StateType
from .._store._checkpoints import read_checkpoint
from .._store._leases import acquire_lease, release_lease
from .._store._recovery import FinishedRun, finished_event_ids, finished_events, load_offsets
from .._store._results import run_results
from .._store._writer import RunWriter
from ._admission import AdmissionAbandoned
from ._controlled import FlowControls, decode_json, partition_of
from ._controls import Controls
from ._liveness import Outage, SubscriptionHealth
from ._offsets import OffsetTracker
from ._source import Event, EventSink, Partition, Sink, Source

logger = logging.getLogger("eventflow.runtime")

FailurePolicy = Literal["dead_letter", "skip", "stop"]
ParamsOverride = Mapping[str, Any] | Callable[[Event], Mapping[str, Any]]


class Notifier(Protocol):
    """Told of runs that end badly (see eventflow.WebhookNotifier); must not block."""

    def notify(self, notification: Notification) -> None: ...

    def close(self, timeout: float = ...) -> None: ...


SOURCE_CALL_TIMEOUT = 30.0
"""Seconds a call into a source or sink (a broker commit, a dead letter) may take."""

_STORE_BACKLOG_LIMIT = 20_000
"""Records queued for the store beyond which consumption pauses until it catches up.

It bounds memory when the store is slower than the stream: at 200,000 the
queue alone grew a worker by 300 MB over 200,000 events (bench/kafka.py).
"""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A source bound to a flow, with its policies (see `App.subscribe`)."""

    source: Source
    flow: Flow[Any, Any]
    on_failure: FailurePolicy = "dead_letter"
    dead_letter: Sink | None = None
    max_in_flight: int = 1024
    max_in_flight_per_partition: int = 256
    key_ordering: bool = True
    params: ParamsOverride | None = None
    revoke_grace_seconds: float = 10.0
    notifiers: tuple[Notifier, ...] = ()
    controls: Controls | None = None

    @property
    def name(self) -> str:
        return f"{self.source.name}->{self.flow.name}"


@dataclass(slots=True)
class _PartitionState:
    tracker: OffsetTracker
    done: dict[int, FinishedRun]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    stopped: bool = False
    closing: bool = False
    stored: int | None = None
    reading: bool = False
    """An event arrived: finished runs before where the source reads are no longer kept."""


@dataclass(slots=True)
class RunnerStats:
    """What a status line or a metrics exporter reads."""

    received: int = 0
    completed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    skipped_duplicates: int = 0
    invalid: int = 0
    replayed: int = 0
    last_event_at: float | None = None
    waiting: dict[str, int] = field(
        default_factory=lambda: {
            "concurrency": 0,
            "rate_limit": 0,
            "idempotency": 0,
            "debounce": 0,
            "batch": 0,
        }
    )
    """Events held back now, by control (they count as in flight)."""
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    """(control, decision) -> events, e.g. ("rate_limit", "throttled")."""

    def decide(self, control: str, decision: str, events: int = 1) -> None:
        key = (control, decision)
        self.decisions[key] = self.decisions.get(key, 0) + events


class SubscriptionRunner(FlowControls, EventSink):
    def __init__(
        self,
        subscription: Subscription,
        writer: RunWriter,
        engine: AsyncEngine,
        worker_id: str,
        *,
        health: SubscriptionHealth | None = None,
    ) -> None:
        self.subscription = subscription
        self.source = subscription.source
        self.flow = subscription.flow
        self.writer = writer
        self.engine = engine
        self.worker_id = worker_id
        self.stats = RunnerStats()
        self._resume = ResumePlans()
        self.in_flight = 0
        self._stopping = False
        self._partitions: dict[Partition, _PartitionState] = {}
        self._keys: dict[tuple[Partition | None, str], deque[Event]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        """Runs of unpartitioned events, replays and batches (a partition holds its own)."""
        self._unacked: list[Event] = []
        self._dead_letter: Sink | None = None
        self._sink_started = False
        name = subscription.name
        self.health = health or SubscriptionHealth(name, stall_after=30.0, unhealthy_after=120.0)
        self.committed: dict[Partition, int] = {}
        """Offsets the source last confirmed committed (the broker's copy, for lag tools)."""
        self._to_commit: dict[Partition, int] = {}
        """Offsets stored with the runs and not yet committed to the source."""
        self.outages = (
            commit_outage := Outage(f"{name}: broker commit (offsets are safe in the store)"),
            dead_letter_outage := Outage(f"{name}: dead-letter sink"),
            offsets_outage := Outage(f"{name}: reading offsets from the run store"),
        )
        self._commit_outage = commit_outage
        self._dead_letter_outage = dead_letter_outage
        self._offsets_outage = offsets_outage
        self.controls = subscription.controls
        self._init_controls(engine)

    # -- EventSink ---------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop_fetching(self) -> None:
        """From now on no event starts: those waiting for a control are abandoned."""
        self._stopping = True
        if self._gate is not None:
            self._gate.abandon(lambda _ticket: True)
            self._gate.close()
        if self._debouncer is not None:
            for event in self._debouncer.drop(lambda _event: True):
                self._finish(event, False, chained=False)
        if self._batcher is not None:
            for event in self._batcher.drop(lambda _event: True):
                self._finish(event, False, chained=False)

    def _store_congested(self) -> bool:
        return not self.writer.healthy or self.writer.pending > _STORE_BACKLOG_LIMIT

    def accepting(self) -> bool:
        return not (
            self._stopping
            or self._store_congested()
            or self.in_flight >= self.subscription.max_in_flight
        )

    def paused(self, assigned: Iterable[Partition]) -> set[Partition]:
        if self._store_congested() or self.in_flight >= self.subscription.max_in_flight:
            return set(assigned)
        bound = self.subscription.max_in_flight_per_partition
        result = set()
        for partition in assigned:
            state = self._partitions.get(partition)
            if state is not None and (state.stopped or state.tracker.in_flight >= bound):
                result.add(partition)
        return result

    async def assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Load stored offsets and the already-finished events after them (for dedupe)."""
        group = self.source.group_id
        stored: dict[Partition, int] = {}
        delay = 0.1
        while True:
            try:
                if group is not None:
                    stored = await load_offsets(self.engine, group, list(partitions))
                done = {
                    p: await finished_events(
                        self.engine, self.flow.name, p[0], p[1], stored.get(p, 0), group
                    )
                    for p in partitions
                }
                await self._resume.load(
                    self.engine, self.flow.name, partitions, stored, done, group
                )
                break
            except Exception as error:  # the store is down: assignment waits for it
                if self._stopping:
                    raise
                self._offsets_outage.failed(f"{type(error).__name__}: {error}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._offsets_outage.recovered()
        for partition in partitions:
            start = stored.get(partition)
            state = _PartitionState(OffsetTracker(start), done[partition], stored=start)
            self._partitions[partition] = state
            if start is not None:
                # the broker's copy may lag the store's (a commit it never got before a
                # restart or a rebalance): give it the stored offset with the next commit
                self._to_commit[partition] = start
        if partitions:
            logger.info(
                "%s: assigned %s",
                self.subscription.name,
                ", ".join(f"{t}[{p}]@{stored.get((t, p), 'start')}" for t, p in sorted(partitions)),
            )
        return stored

    async def release_lease(self, name: str) -> None:
        try:
            await release_lease(self.engine, name, self.worker_id)
        except Exception as error:  # it expires by itself
            logger.warning("%s: cannot release lease %r: %s", self.subscription.name, name, error)

    async def lease(self, name: str, ttl: float) -> bool:
        try:
            return await acquire_lease(self.engine, name, self.worker_id, ttl)
        except Exception as error:
            logger.warning("%s: cannot take lease %r: %s", self.subscription.name, name, error)
            return False

    async def checkpoint(self) -> str | None:
        return await read_checkpoint(self.engine, self.subscription.name)

    def save_checkpoint(self, value: str) -> None:
        self.writer.put_checkpoint(self.subscription.name, self.source.name, value)

    async def revoked(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Finish (within the grace period) or abandon the partitions' runs; store their offsets."""
        states = {p: s for p in partitions if (s := self._partitions.get(p)) is not None}
        for state in states.values():
            state.closing = True  # finishing runs start no queued successors
        if self._gate is not None:
            self._gate.abandon(lambda ticket: ticket.owner in states)
        if self._debouncer is not None:
            for event in self._debouncer.drop(lambda e: partition_of(e) in states):
                self._finish(event, False, chained=False)
        if self._batcher is not None:
            for event in self._batcher.drop(lambda e: partition_of(e) in states):
                self._finish(event, False, chained=False)
        tasks = [t for s in states.values() for t in s.tasks]
        if tasks:
            _done, pending = await asyncio.wait(
                tasks, timeout=self.subscription.revoke_grace_seconds
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
                logger.warning(
                    "%s: abandoned %d runs of revoked partitions",
                    self.subscription.name,
                    len(pending),
                )
        for key in [k for k in self._keys if k[0] in states]:
            dropped = self._keys.pop(key)
            self.in_flight -= len(dropped)
            self._forget(dropped)
        # a rebalance must not wait for a store that is away: what is not stored in
        # time is not committed, and the next owner reads those events again
        offsets = await self._store_offsets(states, self.subscription.revoke_grace_seconds)
        for partition in states:
            self._partitions.pop(partition, None)
            self._to_commit.pop(partition, None)  # the source commits these on revocation
            self.committed.pop(partition, None)
        return offsets

    async def deliver(self, events: Sequence[Event]) -> None:
        if self._stopping:
            # fetched before the stop: partitioned events are read again by the next
            # owner; an unpartitioned source must not count them as taken
            if any(e.partition is None for e in events):
                raise WorkerStoppingError("the worker is stopping; the events were not taken")
            return
        unpartitioned = [e for e in events if e.partition is None]
        done_ids = (
            await finished_event_ids(self.engine, self.flow.name, [e.id for e in unpartitioned])
            if unpartitioned
            else {}
        )
        now = time.time()
        controls = self.controls
        for event in events:
            self.stats.received += 1
            self.stats.last_event_at = now
            partition: Partition | None = None
            if event.partition is not None:
                partition = (event.stream or "", event.partition)
                state = self._partitions.get(partition)
                if state is None or state.stopped or event.offset is None:
                    continue  # not (or no longer) ours: the next owner reads it again
                if not state.tracker.delivered(event.offset):
                    continue
                if not state.reading:
                    # the source starts here (a new group may start at the end): the
                    # finished runs of earlier offsets can never be needed
                    state.reading = True
                    state.done = {o: r for o, r in state.done.items() if o >= event.offset}
                finished = state.done.pop(event.offset, None)
            else:
                finished = done_ids.get(event.id)
            self.in_flight += 1
            if finished is not None:
                self._start(event, partition, self._redo(event, finished))
                continue
            if controls is not None and controls.cancel_on and self._cancel_signal(event):
                continue
            if self._debouncer is not None and self._debounce(event):
                continue
            if controls is not None and controls.singleton_key and self._singleton(event):
                continue
            if self._batcher is not None and isinstance(decode_json(event.value), dict):
                self._batcher.add(event)  # (a poison event fails on its own, below)
                continue
            self._enter(event, partition)

    def _enter(self, event: Event, partition: Partition | None) -> None:
        """Start the event's run, or queue it behind the running event with its key."""
        if self.controls is not None and self.controls.cancel_key is not None:
            self._cancellable_by_key(event)
        if event.key is not None and self.subscription.key_ordering:
            chain = (partition, event.key)
            queue = self._keys.get(chain)
            if queue is not None:
                queue.append(event)
                return
            self._keys[chain] = deque()
        self._start(event, partition, self._process(event))

    # -- running events --------------------------------------------------------------

    def _start(self, event: Event, partition: Partition | None, work: Any) -> None:
        # one set per task, so one done callback: its partition's, or the runner's
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            work,
            name=self.subscription.name,  # (a fixed name spares numbering every task)
        )
        tasks = self._tasks if partition is None else self._partitions[partition].tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _process(self, event: Event) -> None:
        finished = False
        try:
            if self.controls is None:
                state = await self._run(event)
            else:
                run_id = self._run_ids.pop(event.id, None) or new_id()
                holder = self._hold(event)
                if holder is not None and holder.cancelled_by is not None:
                    self._record_cancelled(event, holder)
                    finished = True
                    return
                try:
                    controlled = await self._controlled(event, self.controls, run_id)
                except asyncio.CancelledError:
                    if holder is None or holder.cancelled_by is None:
                        raise
                    task = asyncio.current_task()
                    if task is not None:
                        task.uncancel()
                    self._record_cancelled(event, holder)
                    finished = True
                    return
                if holder is not None:
                    holder.task = None  # the run is over: too late to cancel it
                if controlled is None:  # not run (a duplicate): done with
                    finished = True
                    return
                state = controlled
            if isinstance(state.data, ParameterValidationError):
                self.stats.invalid += 1
            if state.type is StateType.COMPLETED:
                self.stats.completed += 1
                finished = True
            else:
                self.stats.failed += 1
                self._notify(event, state)
                finished = await self._apply_failure_policy(event, state.run_id, state.message)
        except AdmissionAbandoned:
            pass  # the event is read again by whoever owns its partition next
        except Exception:
            # a bug or a broken sink, not the flow (its errors are states): keep the
            # event unfinished and stop its partition there; a restart reads it again
            logger.exception("%s: handling event %s failed", self.subscription.name, event.id)
            self._stop_partition(event)
        finally:
            if self._holders:
                self._release_holding(event)
            self._finish(event, finished)

    def _stop_partition(self, event: Event) -> None:
        if event.partition is not None:
            state = self._partitions.get((event.stream or "", event.partition))
            if state is not None:
                state.stopped = True

    def _notify(self, event: Event, state: State) -> None:
        if not self.subscription.notifiers:
            return
        notification = Notification(
            flow_name=self.flow.name,
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
                logger.exception("%s: notifier %r failed", self.subscription.name, notifier)

    async def _redo(self, event: Event, previous: FinishedRun) -> None:
        """A redelivered event whose run already ended: never run it again.

        A completed run is simply acknowledged; a failed one has its failure
        policy applied again (the dead letter may not have been sent before a crash).
        """
        finished = True
        try:
            self.stats.skipped_duplicates += 1
            if previous.state_type not in ("COMPLETED", "CANCELLED"):  # CANCELLED: not run
                finished = await self._apply_failure_policy(event, previous.run_id, previous.error)
        except Exception:
            logger.exception("%s: redelivered event %s failed", self.subscription.name, event.id)
            finished = False
        finally:
            self._finish(event, finished, chained=False)  # it never joined its key's queue

    def start_replay(self, row: Mapping[str, Any]) -> None:
        """Run a claimed replay request in the background (drained, counted in flight).

        Replays bypass the flow controls: they were asked for one by one.
        """
        task = asyncio.get_running_loop().create_task(self.replay(row))
        self.in_flight += 1
        self._tasks.add(task)
        task.add_done_callback(self._replay_done)

    def _replay_done(self, task: asyncio.Task[None]) -> None:
        self.in_flight -= 1
        self._tasks.discard(task)

    async def replay(self, row: Mapping[str, Any]) -> None:
        """Run a replay request claimed from the store (`claim_replays`), with its run id.

        The stored event goes through the same decoding as when it first
        arrived; the outcome is only recorded (no dead letter, no offsets: the
        event was dealt with the first time).
        """
        self.stats.replayed += 1
        resumed = row.get("resumed_from")  # runs retry: reuse what that run completed
        resume = None if resumed is None else await run_results(self.engine, resumed)
        if row["event_payload"] is None:  # a direct call's run: its stored parameters
            await run_flow(
                self.flow,
                self.writer,
                kwargs=orjson.loads(row["parameters"] or "{}"),
                worker_id=self.worker_id,
                flow_run_id=row["id"],
                retry_of=row["retry_of"],
                resume=resume,
            )
            return
        event = Event(
            id=row["event_id"] or row["retry_of"],
            value=row["event_payload"],
            key=row["event_key"],
            stream=row["event_source"],
            partition=row["event_partition"],
            offset=row["event_offset"],
            timestamp=None if row["event_time"] is None else row["event_time"].timestamp(),
        )
        await self._run(event, run_id=row["id"], retry_of=row["retry_of"], resume=resume)

    async def _run(
        self,
        event: Event,
        *,
        run_id: str | None = None,
        retry_of: str | None = None,
        resume: Resume | None = None,
    ) -> State:
        if retry_of is None:  # a delivery, not a replay: resume its unfinished run, if any
            resume = self._resume.take(event.stream, event.partition, event.offset)
        info = EventInfo(
            source=event.stream or self.source.name,
            id=event.id,
            key=event.key,
            partition=event.partition,
            offset=event.offset,
            payload=event.value,
            timestamp=event.timestamp,
            group=self.source.group_id,
        )
        params = self.subscription.params
        if params is None:
            return await run_flow(
                self.flow,
                self.writer,
                raw_parameters=event.value,
                event=info,
                worker_id=self.worker_id,
                flow_run_id=run_id,
                retry_of=retry_of,
                resume=resume,
            )
        try:
            override = params(event) if callable(params) else params
            decoded = {} if callable(params) else orjson.loads(event.value)
            if not isinstance(decoded, dict):
                raise TypeError("the event is not a JSON object")
            kwargs = {**self._flow_parameters(decoded), **override}
        except Exception as error:
            kwargs = {"__invalid_event__": f"{type(error).__name__}: {error}"}
        return await run_flow(
            self.flow,
            self.writer,
            kwargs=kwargs,
            event=info,
            worker_id=self.worker_id,
            flow_run_id=run_id,
            retry_of=retry_of,
            resume=resume,
        )

    def _flow_parameters(self, decoded: dict[str, Any]) -> dict[str, Any]:
        """The event's keys the flow takes: like a plain event, extra keys are ignored.

        (A schedule's `scheduled_at` must not fail a flow that does not take it.)
        """
        parameters = self.flow.signature.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return decoded
        return {k: v for k, v in decoded.items() if k in parameters}

    def _finish(self, event: Event, finished: bool, *, chained: bool = True) -> None:
        """Account for a run that ended; `finished` lets its offset advance.

        `chained` is False for an event that never entered its key's queue (debounced).
        """
        self.source.settled(event, finished)
        self.in_flight -= 1
        partition: Partition | None = None
        closing = self._stopping
        if event.partition is not None:
            partition = (event.stream or "", event.partition)
            state = self._partitions.get(partition)
            if state is not None and event.offset is not None:
                closing = closing or state.closing
                if finished:
                    state.tracker.finished(event.offset)
                else:
                    state.tracker.in_flight -= 1
        elif finished:
            self._unacked.append(event)
        if event.key is None or not self.subscription.key_ordering or not chained:
            return
        chain = (partition, event.key)
        queue = self._keys.get(chain)
        if queue is None:
            return
        if closing or (not finished and partition is not None):
            # shutting down, partition revoked or stopped, or its run abandoned:
            # the queued events are read again by whoever owns the partition next
            self.in_flight -= len(queue)
            if partition is not None and (held := self._partitions.get(partition)) is not None:
                held.tracker.in_flight -= len(queue)
            del self._keys[chain]
            self._forget(queue)
            return
        if queue:
            self._start(queue[0], partition, self._process(queue.popleft()))
        else:
            del self._keys[chain]

    # -- failures --------------------------------------------------------------------

    async def _apply_failure_policy(
        self, event: Event, run_id: str | None, error: str | None
    ) -> bool:
        """Dead-letter, skip or stop; True when the event is done with."""
        policy = self.subscription.on_failure
        if policy == "skip":
            return True
        if policy == "stop":
            if event.partition is not None:
                state = self._partitions.get((event.stream or "", event.partition))
                if state is not None:
                    state.stopped = True
                logger.error(
                    "%s: stopping partition %s[%s] at offset %s: run %s failed: %s",
                    self.subscription.name,
                    event.stream,
                    event.partition,
                    event.offset,
                    run_id,
                    error,
                )
            return False
        sink = self._dead_letter_target()
        if sink is None:
            logger.error(
                "%s: no dead-letter sink; skipping failed event %s",
                self.subscription.name,
                event.id,
            )
            return True
        headers = [
            *event.headers,
            ("eventflow-error", (error or "").encode()[:4000]),
            ("eventflow-flow", self.flow.name.encode()),
            ("eventflow-flow-run-id", (run_id or "").encode()),
            ("eventflow-event-id", event.id.encode()),
        ]
        if event.stream is not None:
            headers.append(("eventflow-original-topic", event.stream.encode()))
        if event.partition is not None:
            headers.append(("eventflow-original-partition", str(event.partition).encode()))
        if event.offset is not None:
            headers.append(("eventflow-original-offset", str(event.offset).encode()))
        delay = 0.1
        while True:
            try:
                async with asyncio.timeout(SOURCE_CALL_TIMEOUT):
                    if not self._sink_started:
                        await sink.start()
                        self._sink_started = True
                    await sink.send(
                        event.value, key=event.key.encode() if event.key else None, headers=headers
                    )
                self._dead_letter_outage.recovered()
                self.stats.dead_lettered += 1
                return True
            except asyncio.CancelledError:
                raise
            except Exception as send_error:
                if self._stopping:
                    logger.error(
                        "%s: dead letter for %s not sent before shutdown: %s",
                        self.subscription.name,
                        event.id,
                        _describe(send_error),
                    )
                    return False
                self._dead_letter_outage.failed(f"send failed: {_describe(send_error)}")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _dead_letter_target(self) -> Sink | None:
        """The subscription's dead-letter sink, else the source's; started when first used."""
        if self._dead_letter is None:
            self._dead_letter = self.subscription.dead_letter or self.source.dead_letter_sink()
        return self._dead_letter

    # -- offsets ---------------------------------------------------------------------

    async def commit(self) -> None:
        """Store the offsets that advanced (with the runs before them), then tell the source.

        Offsets the source failed to commit (a broker away) are committed again
        on the next call, even if no run finished meanwhile.
        """
        self._to_commit.update(await self._store_offsets(self._partitions))
        if self._to_commit:
            await self._commit_to_source()
        elif self._commit_outage.active:
            self._commit_outage.clear()  # what failed to commit is another worker's now
        if self._unacked:
            events, self._unacked = self._unacked, []
            await self.writer.flush()
            await self.source.ack(events)

    async def _store_offsets(
        self, states: Mapping[Partition, _PartitionState], timeout: float | None = None
    ) -> dict[Partition, int]:
        """Store the offsets that advanced, with the runs queued before them; those stored.

        With a `timeout`, a store that does not confirm in time stores nothing
        now (the offsets stay queued and are written when it is back).
        """
        advanced: dict[Partition, int] = {}
        for partition, state in states.items():
            committable = state.tracker.committable
            if committable is not None and committable != state.stored:
                advanced[partition] = committable
        group = self.source.group_id
        if not advanced:
            return {}
        if group is not None:
            self.writer.put_offsets(group, [(t, p, o) for (t, p), o in advanced.items()])
        try:
            await asyncio.wait_for(self.writer.flush(), timeout)
        except TimeoutError:
            return {}
        for partition, offset in advanced.items():
            if (stored_state := states.get(partition)) is not None:
                stored_state.stored = offset
        return advanced

    async def _commit_to_source(self) -> None:
        offsets = {p: o for p, o in self._to_commit.items() if p in self._partitions}
        try:
            async with asyncio.timeout(SOURCE_CALL_TIMEOUT):
                await self.source.commit(offsets)
        except Exception as error:  # the store has them; the broker's copy is for lag tools
            self._commit_outage.failed(_describe(error))
            return
        self._commit_outage.recovered()
        self.committed.update(offsets)
        for partition, offset in offsets.items():
            if self._to_commit.get(partition) == offset:
                del self._to_commit[partition]

    def stored_offsets(self) -> dict[Partition, int]:
        """The offsets stored with the runs, per partition of ours that has one."""
        return {p: s.stored for p, s in self._partitions.items() if s.stored is not None}

    async def drain(self, grace_seconds: float) -> int:
        """Wait for runs in flight up to `grace_seconds`, cancel the rest; how many were cancelled.

        Call after `stop_fetching()`: from then on no queued event starts.
        """
        tasks = self._tasks.union(*(state.tasks for state in self._partitions.values()))
        if not tasks:
            return 0
        _done, pending = await asyncio.wait(tasks, timeout=grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        return len(pending)

    async def stop_sink(self) -> None:
        if self._dead_letter is not None and self._sink_started:
            await self._dead_letter.stop()
            self._sink_started = False


def _describe(error: BaseException) -> str:
    """`Type: message`, or the type alone when the message is empty (a TimeoutError)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
