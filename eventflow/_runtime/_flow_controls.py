"""FlowControls: a subscription's flow controls, as one part of the runner's pipeline.

The runner asks them twice per event. When it is delivered, `decide` says
what happens to it: RUN (start it, or queue it behind its key), HOLD (a
control keeps it: a debounced burst or a batch gives it back later through
the callbacks it was built with), or SKIP (not run, and its record is
written: a cancel signal, a singleton's skip). Right before it runs, `run`
passes it through the `RunGate` (idempotency, concurrency, rate limits) and
runs it, or says why it did not: SKIP (a duplicate) or CANCEL (a later event
or a cancel signal cancelled it). The controls know nothing of the runner:
only the delivery, the callbacks, and a predicate saying which events must
not start any more.

The mechanics live in modules of their own: `_limits` (concurrency, rate
limits, priority), `_debounce_and_batch`, `_claims` (idempotency),
`_records` (what they write about the runs they decide on).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from .._flows import Flow
from .._ids import new_id
from .._interruption import CURRENT_RUN, Interruption
from .._metrics import RECORDER
from .._states import CancelRequest, State
from .._store._runstore import RunStore
from .._store._writer import RunWriter
from ._control_options import Controls, evaluate_key
from ._debounce_and_batch import Batcher, Debouncer
from ._delivery import Delivery
from ._fencing import PartitionFences
from ._records import ControlRecords
from ._run_gate import Run, RunGate
from ._source import Event, Partition
from ._subscription import RunnerStats


class Decision(enum.Enum):
    """What flow controls decided for an event (see the module)."""

    RUN = "run"
    HOLD = "hold"
    SKIP = "skip"
    CANCEL = "cancel"


@dataclass(eq=False, slots=True)
class KeyedRun:
    """An event holding a singleton key or cancellable by key, from delivery until it ends."""

    event: Event
    run_id: str
    singleton_key: str | None = None
    cancel_key: str | None = None
    run: Interruption | None = None
    """Its run, while it runs (to cancel it)."""
    cancelled_by: str | None = None
    """The run (or cancel signal) it was cancelled for; then `reason` names its state."""
    reason: str = ""
    message: str = ""


class FlowControls:
    """The flow controls of one subscription (see the module)."""

    def __init__(
        self,
        controls: Controls,
        *,
        name: str,
        flow: Flow[Any, Any],
        worker_id: str,
        source_name: str,
        group: str | None,
        fences: PartitionFences,
        store: RunStore,
        writer: RunWriter,
        stats: RunnerStats,
        abandoning: Callable[[Event], bool],
        release: Callable[[Delivery], None],
        done_with: Callable[[Delivery, bool], None],
        run_batch: Callable[[list[Delivery]], None],
        start_helper: Callable[[Coroutine[Any, Any, None]], None],
    ) -> None:
        self.controls = controls
        self.flow = flow
        self.stats = stats
        self._release = release
        """A held event may run now (its debounce period passed)."""
        self._done_with = done_with
        """A held event is done with without running (superseded), or never ran."""
        self._run_batch = run_batch
        self.records = ControlRecords(writer, flow, worker_id, source_name, group, fences)
        self.gate = RunGate(
            controls,
            name=name,
            flow_name=flow.name,
            worker_id=worker_id,
            store=store,
            writer=writer,
            records=self.records,
            stats=stats,
            abandoning=abandoning,
            group=group,
            start_helper=start_helper,
        )
        self._closed = False
        self._debouncer: Debouncer | None = None
        if controls.debounce is not None:
            self._debouncer = Debouncer(
                controls.debounce, self._debounced, new_id, waiting=stats.waiting
            )
        self._batcher: Batcher | None = None
        self._batch_running = False
        if controls.batch_size is not None:
            self._batcher = Batcher(
                controls.batch_size, controls.batch_timeout, self._next_batch, waiting=stats.waiting
            )
        self._holders: dict[str, KeyedRun] = {}
        """Every held event (singleton or cancellable) until its run ends, by event id."""
        self._singletons: dict[str, KeyedRun] = {}
        """The current holder of each singleton key."""
        self._cancellable: dict[str, set[KeyedRun]] = {}
        """The events in flight by cancel key (see `cancel_on`)."""

    # -- at delivery -----------------------------------------------------------------------

    def decide(self, delivery: Delivery) -> Decision:
        """What happens to a delivered event: RUN, HOLD or SKIP (recorded)."""
        controls = self.controls
        if controls.cancel_on is not None and self._cancel_signal(delivery):
            return Decision.SKIP
        if self._debouncer is not None and self._debounce(delivery):
            return Decision.HOLD
        if controls.singleton_key is not None and self._singleton(delivery):
            return Decision.SKIP
        if self._batcher is not None and isinstance(delivery.document, dict):
            self._batcher.add(delivery)  # (a poison event fails on its own, as a run)
            return Decision.HOLD
        self._index_cancellable(delivery)
        return Decision.RUN

    def _debounce(self, delivery: Delivery) -> bool:
        """Hold the event for its debounce key; False when it has no key (it runs now)."""
        assert self._debouncer is not None
        getter = self.controls.debounce_key
        key = "" if getter is None else evaluate_key(getter, delivery.document)
        if key is None:
            return False
        superseded, run_id = self._debouncer.offer(key, delivery)
        if superseded is not None:
            self.stats.decide("debounce", "superseded")
            skipped_id = superseded.run_id or new_id()
            self.records.run(
                superseded.event, skipped_id, "CANCELLED", "Debounced", linked_run_id=run_id
            )
            self.records.log(
                skipped_id,
                f"not run: superseded by event {delivery.event.id} within the debounce period"
                f" ({self.controls.debounce:g}s{f', key {key!r}' if getter else ''});"
                f" run {run_id} runs for the last event",
            )
            RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
            self._done_with(superseded, True)
        return True

    def _debounced(self, delivery: Delivery, run_id: str) -> None:
        """The event's key was quiet for the debounce period: it runs, as `run_id`."""
        self.stats.decide("debounce", "ran")
        delivery.run_id = run_id
        self._index_cancellable(delivery)
        self._release(delivery)

    def _cancel_signal(self, delivery: Delivery) -> bool:
        """True if the event is a cancel signal (`cancel_on`): it cancels, and does not run."""
        key = evaluate_key(self.controls.cancel_on, delivery.document)
        if key is None:
            return False
        event = delivery.event
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
        self.records.run(event, signal_id, "CANCELLED", "CancelSignal")
        self.records.log(
            signal_id, f"not run: a cancel signal for key {key!r}; cancelled {len(targets)} run(s)"
        )
        RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
        return True

    def _singleton(self, delivery: Delivery) -> bool:
        """Take the event's singleton key; True if it is skipped instead (a run holds the key).

        In "cancel" mode the holder's run is cancelled (or, not started yet,
        never starts) and the new event takes the key.
        """
        key = evaluate_key(self.controls.singleton_key, delivery.document)
        if key is None:
            return False
        holder = self._singletons.get(key)
        if holder is not None and self.controls.singleton_mode == "skip":
            run_id = new_id()
            self.stats.decide("singleton", "skipped")
            self.records.run(
                delivery.event, run_id, "CANCELLED", "Skipped", linked_run_id=holder.run_id
            )
            self.records.log(run_id, f"not run: run {holder.run_id} holds singleton key {key!r}")
            RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)
            return True
        holding = self._holding(delivery)
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

    def _index_cancellable(self, delivery: Delivery) -> None:
        """Index an event that is about to run (or queue) by its cancel key."""
        if self.controls.cancel_key is None:
            return
        key = evaluate_key(self.controls.cancel_key, delivery.document)
        if key is not None:
            holding = self._holding(delivery)
            holding.cancel_key = key
            self._cancellable.setdefault(key, set()).add(holding)

    def _holding(self, delivery: Delivery) -> KeyedRun:
        event = delivery.event
        holding = self._holders.get(event.id)
        if holding is None:
            if delivery.run_id is None:
                delivery.run_id = new_id()
            holding = self._holders[event.id] = KeyedRun(event, delivery.run_id)
        return holding

    def _cancel(self, holding: KeyedRun, by: str, reason: str, message: str) -> None:
        """Cancel a held event's run (or, not started yet, it never starts)."""
        if holding.cancelled_by is not None:
            return
        holding.cancelled_by, holding.reason, holding.message = by, reason, message
        if holding.run is not None:
            holding.run.cancel(CancelRequest(reason, message, by))

    # -- at the run ------------------------------------------------------------------------

    async def run(self, delivery: Delivery, run: Run) -> State | Decision:
        """Run the event through the gate: its final state, or SKIP or CANCEL (recorded)."""
        run_id = delivery.run_id or new_id()
        holder = self._holders.get(delivery.event.id)
        if holder is not None:
            if holder.cancelled_by is not None:
                self._record_cancelled(holder)
                return Decision.CANCEL
            holder.run = CURRENT_RUN.get()
        try:
            state = await self.gate.run(delivery, run_id, run)
        except asyncio.CancelledError:
            if holder is None or holder.cancelled_by is None or holder.run is None:
                raise
            holder.run.absorb()  # cancelled on purpose: recorded here, the event is done with
            self._record_cancelled(holder)
            return Decision.CANCEL
        if holder is not None:
            holder.run = None  # the run is over: too late to cancel it
        return Decision.SKIP if state is None else state

    def _record_cancelled(self, holding: KeyedRun) -> None:
        """The event's run was cancelled (or never started): a later event or a signal."""
        self.records.run(
            holding.event,
            holding.run_id,
            "CANCELLED",
            holding.reason,
            linked_run_id=holding.cancelled_by,
        )
        self.records.log(holding.run_id, holding.message)
        RECORDER.run_finished("flow", self.flow.name, "CANCELLED", None)

    def release(self, deliveries: Iterable[Delivery]) -> None:
        """The events ended (or were dropped before they ran): what was kept for them goes."""
        if not self._holders:
            return
        for delivery in deliveries:
            holding = self._holders.pop(delivery.event.id, None)
            if holding is None:
                continue
            key = holding.singleton_key
            if key is not None and self._singletons.get(key) is holding:
                del self._singletons[key]
            if holding.cancel_key is not None:
                others = self._cancellable.get(holding.cancel_key)
                if others is not None:
                    others.discard(holding)
                    if not others:
                        del self._cancellable[holding.cancel_key]

    # -- batches ---------------------------------------------------------------------------

    def _next_batch(self) -> None:
        """Start the next sealed batch, unless one runs: batches run one at a time, in order."""
        if self._batch_running or self._closed or self._batcher is None:
            return
        batch = self._batcher.take()
        if batch is None:
            return
        self._batch_running = True
        self._run_batch(batch)

    def batch_ended(self) -> None:
        self._batch_running = False
        self._next_batch()

    # -- stopping --------------------------------------------------------------------------

    def drop(self, partitions: set[Partition] | None = None) -> list[Delivery]:
        """Events waiting or held for `partitions` (all: None) give up; the held ones.

        With None nothing waits from now on (the worker stops).
        """
        if partitions is None:
            self._closed = True
            self.gate.close()
        else:
            self.gate.abandon(lambda owner: owner in partitions)

        def chosen(delivery: Delivery) -> bool:
            return partitions is None or delivery.partition in partitions

        dropped: list[Delivery] = []
        if self._debouncer is not None:
            dropped.extend(self._debouncer.drop(chosen))
        if self._batcher is not None:
            dropped.extend(self._batcher.drop(chosen))
        return dropped
