"""Flow controls in the runner: what `SubscriptionRunner` does with each control.

The controls' mechanics live in modules of their own (`_admission`:
concurrency, rate limits, priority; `_holding`: debounce and batches;
`_claims`: idempotency; `_records`: the runs they decide on). This mixin ties
them to the runner's events: when an event waits, is held, superseded,
batched, deduplicated or cancelled, and what is recorded for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine

from .._engine import run_flow
from .._ids import new_id
from .._metrics import RECORDER
from .._states import State, StateType
from .._store._idempotency import COMPLETED, RELEASED, stored_key
from .._store._writer import RunWriter
from ._admission import Admission, AdmissionAbandoned, Ticket
from ._claims import KeyClaims
from ._controls import Controls, evaluate_key, evaluate_priority
from ._holding import Batcher, Debouncer
from ._records import ControlRecords
from ._source import Event, Partition, Source

if TYPE_CHECKING:
    from .._flows import Flow
    from ._subscription import RunnerStats, Subscription, _PartitionState

logger = logging.getLogger("eventflow.runtime")


@dataclass(eq=False, slots=True)
class Holding:
    """An event holding a singleton key or cancellable by key, from delivery until it ends."""

    event: Event
    run_id: str
    singleton_key: str | None = None
    cancel_key: str | None = None
    task: asyncio.Task[Any] | None = None
    cancelled_by: str | None = None
    """The run (or cancel signal) it was cancelled for; then `reason` names its state."""
    reason: str = ""
    message: str = ""


_WAIT_STATE = {"concurrency": "AwaitingConcurrency", "rate_limit": "Throttled"}
"""The state_name of a PENDING run waiting for a control."""


def decode_json(value: bytes) -> Any:
    """The event's JSON document for key functions; None if it is not JSON."""
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def partition_of(event: Event) -> Partition | None:
    return None if event.partition is None else (event.stream or "", event.partition)


class FlowControls:
    """The flow-control half of `SubscriptionRunner`: a mixin sharing the runner's state."""

    # the runner's own, set before `_init_controls`
    subscription: Subscription
    source: Source
    flow: Flow[Any, Any]
    controls: Controls | None
    writer: RunWriter
    worker_id: str
    stats: RunnerStats
    _stopping: bool
    _partitions: dict[Partition, _PartitionState]
    _tasks: set[asyncio.Task[None]]

    if TYPE_CHECKING:  # the runner's methods the controls call

        async def _run(
            self, event: Event, *, run_id: str | None = None, retry_of: str | None = None
        ) -> State: ...

        def _finish(self, event: Event, finished: bool, *, chained: bool = True) -> None: ...

        def _enter(self, event: Event, partition: Partition | None) -> None: ...

        def _notify(self, event: Event, state: State) -> None: ...

        async def _apply_failure_policy(
            self, event: Event, run_id: str | None, error: str | None
        ) -> bool: ...

    def _init_controls(self, engine: AsyncEngine) -> None:
        self._gate: Admission | None = None
        if self.controls is not None and self.controls.gated:
            self._gate = Admission(self.controls, waiting=self.stats.waiting)
        self._debouncer: Debouncer | None = None
        self._run_ids: dict[str, str] = {}
        """Run ids given to events before they run (a debounced burst's), by event id."""
        self._batcher: Batcher | None = None
        self._batch_running = False
        if self.controls is not None and self.controls.batch_size is not None:
            self._batcher = Batcher(
                self.controls.batch_size,
                self.controls.batch_timeout,
                self._next_batch,
                waiting=self.stats.waiting,
            )
        self._records = ControlRecords(self.writer, self.flow, self.worker_id, self.source.name)
        self._claims: KeyClaims | None = None
        if self.controls is not None and self.controls.idempotency_key is not None:
            self._claims = KeyClaims(
                engine,
                self.flow.name,
                self.worker_id,
                self.controls.idempotency_window,
                lambda key, run_id: self._settle_claim(key, run_id, False),
            )
        self._holders: dict[str, Holding] = {}
        """Every held event (singleton or cancellable) until its run ends, by event id."""
        self._singletons: dict[str, Holding] = {}
        """The current holder of each singleton key."""
        self._cancellable: dict[str, set[Holding]] = {}
        """The events in flight by cancel key (see `cancel_on`)."""
        if self.controls is not None and self.controls.debounce is not None:
            self._debouncer = Debouncer(
                self.controls.debounce, self._debounced, new_id, waiting=self.stats.waiting
            )

    async def _controlled(self, event: Event, controls: Controls, run_id: str) -> State | None:
        """Run `event` under the subscription's controls; None when it must not run.

        Order: the idempotency claim (a duplicate takes no slot and no token),
        then the admission gate (concurrency, rate limit, priority), then the run.
        """
        document = decode_json(event.value)
        key = evaluate_key(controls.idempotency_key, document)
        if key is not None:
            key = stored_key(key)
        claimed = settled = False
        ticket: Ticket | None = None
        try:
            if key is not None:
                original = await self._claim(event, key, run_id)
                if original is not None:
                    self._record_duplicate(event, run_id, key, original)
                    return None
                claimed = True
            if self._gate is not None:
                ticket = self._gate.ticket(
                    evaluate_key(controls.concurrency_key, document),
                    evaluate_key(controls.rate_limit_key, document),
                    evaluate_priority(controls.priority, document),
                    owner=partition_of(event),
                )
                await self._admit(event, run_id, ticket)
            state = await self._run(event, run_id=run_id)
            if claimed:
                self._settle_claim(key, run_id, state.type is StateType.COMPLETED)
                settled = True
            return state
        finally:
            if ticket is not None and self._gate is not None:
                self._gate.release(ticket)
            if claimed and not settled:
                self._settle_claim(key, run_id, False)

    def _debounce(self, event: Event) -> bool:
        """Hold the event for its debounce key; False when it has no key (it runs now)."""
        assert self._debouncer is not None and self.controls is not None
        getter = self.controls.debounce_key
        key = "" if getter is None else evaluate_key(getter, decode_json(event.value))
        if key is None:
            return False
        superseded, run_id = self._debouncer.offer(key, event)
        if superseded is not None:
            self.stats.decide("debounce", "superseded")
            skipped_id = self._run_ids.pop(superseded.id, None) or new_id()
            self._records.run(
                superseded, skipped_id, "CANCELLED", "Debounced", linked_run_id=run_id
            )
            self._records.log(
                skipped_id,
                f"not run: superseded by event {event.id} within the debounce period"
                f" ({self.controls.debounce:g}s{f', key {key!r}' if getter else ''});"
                f" run {run_id} runs for the last event",
            )
            RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
            self._finish(superseded, True, chained=False)
        return True

    def _debounced(self, event: Event, run_id: str) -> None:
        """The event's key was quiet for the debounce period: it runs, as `run_id`."""
        self.stats.decide("debounce", "ran")
        self._run_ids[event.id] = run_id
        self._enter(event, partition_of(event))

    def _forget(self, events: Iterable[Event]) -> None:
        """Queued events dropped before they ran: what controls kept for them goes too."""
        if self.controls is None:
            return
        for event in events:
            self._run_ids.pop(event.id, None)
            self._release_holding(event)

    def _holding(self, event: Event) -> Holding:
        holding = self._holders.get(event.id)
        if holding is None:
            run_id = self._run_ids.setdefault(event.id, new_id())
            holding = self._holders[event.id] = Holding(event, run_id)
        return holding

    def _cancel(self, holding: Holding, by: str, reason: str, message: str) -> None:
        """Cancel a held event's run (or, not started yet, it never starts)."""
        if holding.cancelled_by is not None:
            return
        holding.cancelled_by, holding.reason, holding.message = by, reason, message
        if holding.task is not None:
            holding.task.cancel()

    def _cancel_signal(self, event: Event) -> bool:
        """True if the event is a cancel signal (`cancel_on`): it cancels, and does not run."""
        assert self.controls is not None
        key = evaluate_key(self.controls.cancel_on, decode_json(event.value))
        if key is None:
            return False
        signal_id = new_id()
        targets = list(self._cancellable.get(key, ()))
        for holding in targets:
            self._cancel(
                holding,
                signal_id,
                "CancelledByEvent",
                f"cancelled by event {event.id}: a cancel signal for key {key!r}",
            )
        self.stats.decide("cancel_on", "signals")
        self.stats.decide("cancel_on", "cancelled", len(targets))
        self._records.run(event, signal_id, "CANCELLED", "CancelSignal")
        self._records.log(
            signal_id, f"not run: a cancel signal for key {key!r}; cancelled {len(targets)} run(s)"
        )
        RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
        self._finish(event, True, chained=False)
        return True

    def _cancellable_by_key(self, event: Event) -> None:
        """Index an event that is about to run (or queue) by its cancel key."""
        assert self.controls is not None
        key = evaluate_key(self.controls.cancel_key, decode_json(event.value))
        if key is not None:
            holding = self._holding(event)
            holding.cancel_key = key
            self._cancellable.setdefault(key, set()).add(holding)

    def _singleton(self, event: Event) -> bool:
        """Take the event's singleton key; True if it is skipped instead (a run holds the key).

        In "cancel" mode the holder's run is cancelled (or, not started yet,
        never starts) and the new event takes the key.
        """
        assert self.controls is not None
        key = evaluate_key(self.controls.singleton_key, decode_json(event.value))
        if key is None:
            return False
        holder = self._singletons.get(key)
        if holder is not None and self.controls.singleton_mode == "skip":
            run_id = new_id()
            self.stats.decide("singleton", "skipped")
            self._records.run(event, run_id, "CANCELLED", "Skipped", linked_run_id=holder.run_id)
            self._records.log(run_id, f"not run: run {holder.run_id} holds singleton key {key!r}")
            RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
            self._finish(event, True, chained=False)
            return True
        holding = self._holding(event)
        if holder is not None:
            self.stats.decide("singleton", "superseded")
            self._cancel(
                holder,
                holding.run_id,
                "Superseded",
                f"cancelled: a later event took singleton key {key!r} (run {holding.run_id})",
            )
        self.stats.decide("singleton", "ran")
        holding.singleton_key = key
        self._singletons[key] = holding
        return False

    def _hold(self, event: Event) -> Holding | None:
        """The event's holding, if any, now with its running task (to cancel it)."""
        holding = self._holders.get(event.id)
        if holding is not None:
            holding.task = asyncio.current_task()
        return holding

    def _release_holding(self, event: Event) -> None:
        holding = self._holders.pop(event.id, None)
        if holding is None:
            return
        key = holding.singleton_key
        if key is not None and self._singletons.get(key) is holding:
            del self._singletons[key]
        if holding.cancel_key is not None:
            others = self._cancellable.get(holding.cancel_key)
            if others is not None:
                others.discard(holding)
                if not others:
                    del self._cancellable[holding.cancel_key]

    def _record_cancelled(self, event: Event, holding: Holding) -> None:
        """The event's run was cancelled (or never started): a later event or a signal."""
        self._records.run(
            event, holding.run_id, "CANCELLED", holding.reason, linked_run_id=holding.cancelled_by
        )
        self._records.log(holding.run_id, holding.message)
        RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)

    def _next_batch(self) -> None:
        """Start the next sealed batch, unless one runs: batches run one at a time, in order."""
        if self._batch_running or self._stopping or self._batcher is None:
            return
        batch = self._batcher.take()
        if batch is None:
            return
        self._batch_running = True
        task = asyncio.get_running_loop().create_task(self._process_batch(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        for partition in {p for e in batch if (p := partition_of(e)) is not None}:
            if (state := self._partitions.get(partition)) is not None:
                state.tasks.add(task)
                task.add_done_callback(state.tasks.discard)

    async def _process_batch(self, events: list[Event]) -> None:
        """One run of the flow with the events' JSON objects as a list (its first parameter).

        Every event gets a record of the batch run's final state, named
        "Batched" and linked to it; their offsets advance only after it.
        """
        finished = [False] * len(events)
        try:
            run_id = new_id()
            self._records.log(
                run_id,
                f"a batch of {len(events)} events: "
                + ", ".join(e.id for e in events[:50])
                + (", ..." if len(events) > 50 else ""),
            )
            state = await run_flow(
                self.flow,
                self.writer,
                args=([decode_json(e.value) for e in events],),
                worker_id=self.worker_id,
                flow_run_id=run_id,
            )
            completed = state.type is StateType.COMPLETED
            for event in events:
                self._records.run(
                    event,
                    new_id(),
                    state.type.value,
                    "Batched",
                    error=None if completed else state.message,
                    linked_run_id=run_id,
                )
            self.stats.decide("batch", "runs")
            self.stats.decide("batch", "events", len(events))
            if completed:
                self.stats.completed += len(events)
                finished = [True] * len(events)
            else:
                self.stats.failed += len(events)
                self._notify(events[0], state)
                for i, event in enumerate(events):
                    finished[i] = await self._apply_failure_policy(event, run_id, state.message)
        finally:
            for event, done in zip(events, finished, strict=True):
                self._finish(event, done, chained=False)
            self._batch_running = False
            self._next_batch()

    async def _admit(self, event: Event, run_id: str, ticket: Ticket) -> None:
        """Until the gate lets the event start; a waiting run is PENDING with the reason."""
        assert self._gate is not None
        stats = self.stats
        if not self._gate.offer(ticket):
            reason = ticket.waited_for[0]
            waited_since = time.time()
            self._records.run(event, run_id, "PENDING", _WAIT_STATE[reason], ended=False)
            self._records.log(run_id, f"waiting: {self._wait_text(reason, ticket)}")
            try:
                await self._gate.wait(ticket)
            except (AdmissionAbandoned, asyncio.CancelledError):
                stats.decide(reason, "abandoned")
                self._records.run(
                    event,
                    run_id,
                    "CRASHED",
                    "Abandoned",
                    error="the worker stopped or lost the partition before the run could start;"
                    " the event is delivered again",
                )
                raise
            self._records.log(
                run_id,
                f"started after waiting {time.time() - waited_since:.3f}s for "
                + " and ".join(self._wait_text(r, ticket) for r in ticket.waited_for),
            )
        if ticket.concurrency_key is not None:
            stats.decide(
                "concurrency", "waited" if "concurrency" in ticket.waited_for else "admitted"
            )
        if ticket.rate_key is not None:
            stats.decide(
                "rate_limit", "throttled" if "rate_limit" in ticket.waited_for else "admitted"
            )

    def _wait_text(self, reason: str, ticket: Ticket) -> str:
        controls = self.controls
        assert controls is not None
        if reason == "concurrency":
            key = ticket.concurrency_key if controls.concurrency_key is not None else None
            scope = f" of key {key!r}" if key is not None else ""
            return f"a concurrency slot{scope} (concurrency={controls.concurrency})"
        key = ticket.rate_key if controls.rate_limit_key is not None else None
        scope = f" of key {key!r}" if key is not None else ""
        return f"the rate limit{scope} ({controls.rate_limit})"

    async def _claim(self, event: Event, key: str, run_id: str) -> str | None:
        """Claim the idempotency key for `run_id`: None, or the run that already completed it.

        While another live run holds the key (here or in another worker) the
        event waits, polling the store, until that run is final.
        """
        stats = self.stats
        delay = 0.02
        waiting = False
        try:
            while True:
                if self._abandoning(event):
                    stats.decide("idempotency", "abandoned")
                    raise AdmissionAbandoned()
                assert self._claims is not None
                try:
                    claim = await self._claims.claim(key, run_id)
                except Exception as error:  # the store is down: wait for it
                    logger.log(
                        logging.DEBUG if waiting else logging.WARNING,
                        "%s: cannot claim idempotency key %r, retrying: %s",
                        self.subscription.name,
                        key,
                        error,
                    )
                else:
                    if claim.outcome == "claimed":
                        stats.decide("idempotency", "claimed")
                        return None
                    if claim.outcome == "duplicate":
                        stats.decide("idempotency", "duplicate")
                        return claim.run_id
                if not waiting:
                    waiting = True
                    stats.waiting["idempotency"] += 1
                    stats.decide("idempotency", "waited")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        finally:
            if waiting:
                stats.waiting["idempotency"] -= 1

    def _abandoning(self, event: Event) -> bool:
        """The event must not start any more: stopping, or its partition is going away."""
        if self._stopping:
            return True
        partition = partition_of(event)
        if partition is None:
            return False
        state = self._partitions.get(partition)
        return state is None or state.closing or state.stopped

    def _settle_claim(self, key: str | None, run_id: str, completed: bool) -> None:
        self.writer.put_idempotency(
            {
                "flow_name": self.flow.name,
                "key": key,
                "run_id": run_id,
                "state": COMPLETED if completed else RELEASED,
                "completed_at": time.time() if completed else None,
            }
        )

    def _record_duplicate(self, event: Event, run_id: str, key: str, original: str) -> None:
        """A CANCELLED "Duplicate" run linked to the run that completed the key."""
        self.stats.skipped_duplicates += 1
        self._records.run(event, run_id, "CANCELLED", "Duplicate", linked_run_id=original)
        self._records.log(
            run_id,
            f"not run: idempotency key {key!r} was completed by run {original} within the"
            f" window of {self.controls.idempotency_window if self.controls else 0:g}s",
        )
        RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
