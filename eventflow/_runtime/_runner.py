"""SubscriptionRunner: one source bound to one flow, with the delivery guarantees.

Every event goes through the same four stages, in this module, top to bottom:

1. **deliver**: the source hands events over; `InFlight` takes those that are
   ours (not revoked, not seen already) and counts them in flight.
2. **decide**: a redelivered event whose run already ended is settled again
   without running; otherwise the flow controls say RUN, HOLD or SKIP
   (`FlowControls.decide`); a run waits behind the running event of its key.
3. **run**: the flow runs, through the controls' gate if there are any.
4. **settle**: a run that did not complete goes to the notifiers and the
   failure policy (`FailurePolicy`); then `InFlight.finish` lets its offset
   advance and starts the next event of its key. Offsets are stored with the
   runs, then committed to the source (`OffsetCommits`).

Events with the same key run one after the other, different keys
concurrently; the number of runs in flight is bounded (globally and per
partition) and the source pauses partitions at the bound. A partition is
claimed before its offsets are read, and a claim the store refuses drops that
partition's work at once (`fence_out`, eventflow/_runtime/_rejoin.py).

Over 450 lines: the four stages and a partition's life (assigned, revoked,
fenced out) keep InFlight's books together, read top to bottom in one place.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .._errors import FencedError, ParameterValidationError, WorkerStoppingError
from .._retries import Backoff
from .._states import FENCED_OUT, REVOKED, SHUT_DOWN, State, StateType
from .._store._fences import Fence
from .._store._runstore import CrashedRun, FinishedRun, RunStore
from .._store._writer import RunWriter
from ._delivery import Delivery
from ._durable_state import StoredDurableState
from ._failure_policy import FailurePolicy
from ._fencing import PartitionFences, WorkerLease
from ._flow_calls import FlowRuns
from ._flow_controls import Decision, FlowControls
from ._inflight import InFlight
from ._limits import AdmissionAbandoned
from ._liveness import Outage, SubscriptionHealth
from ._offset_commits import OffsetCommits
from ._run_group import RunGroup
from ._source import Event, EventSink, Partition
from ._subscription import STORE_BACKLOG_LIMIT, RunnerStats, Subscription

logger = logging.getLogger("eventflow.runtime")

ASSIGNMENT_RETRY = Backoff(initial=0.1, maximum=1.0, jitter=0.0)
"""Between attempts to read a new assignment's offsets while the store is away."""


class SubscriptionRunner(EventSink):
    """Runs one subscription: the source's side of it (`EventSink`) and the pipeline."""

    def __init__(
        self,
        subscription: Subscription,
        writer: RunWriter,
        store: RunStore,
        lease: WorkerLease,
        *,
        health: SubscriptionHealth | None = None,
    ) -> None:
        self.subscription = subscription
        self.source = subscription.source
        self.flow = subscription.flow
        self.writer = writer
        self.store = store
        self.worker_id = worker_id = lease.worker_id
        self.fences = PartitionFences(lease, self.source.group_id, self.flow.name)
        self.durable = StoredDurableState(subscription.name, self.source.name, store, writer, lease)
        self._rejoin: FencedError | None = None
        """Set when a claim was lost: the source restarts (a new consumer), then clears it."""
        self.stats = RunnerStats()
        name = subscription.name
        self.health = health or SubscriptionHealth(name, stall_after=30.0, unhealthy_after=120.0)
        self.inflight = InFlight(name, key_ordering=subscription.key_ordering)
        self.failure_policy = FailurePolicy(
            subscription,
            self.stats,
            stop_partition=self.inflight.stop_partition,
            stopping=lambda: self.inflight.stopping,
        )
        self.offsets = OffsetCommits(name, self.source, writer, self.inflight, self.fences)
        self._offsets_outage = Outage(f"{name}: reading offsets from the run store")
        self.outages = (self.offsets.outage, self.failure_policy.outage, self._offsets_outage)
        self.runs = FlowRuns(
            self.flow,
            writer,
            store,
            fences=self.fences,
            worker_id=worker_id,
            source=self.source,
            params=subscription.params,
            stopping=lambda: self.inflight.stopping,
        )
        self.controls: FlowControls | None = None
        if subscription.controls is not None:
            self.controls = FlowControls(
                subscription.controls,
                name=name,
                flow=self.flow,
                worker_id=worker_id,
                source_name=self.source.name,
                group=self.source.group_id,
                fences=self.fences,
                store=store,
                writer=writer,
                stats=self.stats,
                abandoning=self.inflight.abandoning,
                release=self._enter,
                done_with=self._done_with_unchained,
                run_batch=self._start_batch,
                start_helper=self.inflight.group.start_helper,
            )

    @property
    def group(self) -> RunGroup:
        """The task group of its runs: `App.serve` opens it around its source."""
        return self.inflight.group

    @property
    def in_flight(self) -> int:
        return self.inflight.count

    @property
    def committed(self) -> dict[Partition, int]:
        """Offsets the source last confirmed committed (the broker's copy, for lag tools)."""
        return self.offsets.committed

    # -- what the source asks ------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self.inflight.stopping

    def stop_fetching(self) -> None:
        """From now on no event starts: those waiting for a control are abandoned."""
        self.inflight.stop()
        if self.controls is not None:
            for delivery in self.controls.drop():
                self._done_with_unchained(delivery, False)

    def _store_congested(self) -> bool:
        return not self.writer.healthy or self.writer.pending > STORE_BACKLOG_LIMIT

    def _check_claims(self) -> None:
        """A claim was lost: the source must restart, so the partitions are claimed anew."""
        if self._rejoin is not None:
            raise self._rejoin

    def rejoined(self) -> None:
        """The source restarted after `FencedError`: its new assignment is claimed anew."""
        self._rejoin = None

    def accepting(self) -> bool:
        self._check_claims()
        return self._has_room()

    def _has_room(self) -> bool:
        return not (
            self.inflight.stopping
            or self._store_congested()
            or self.inflight.count >= self.subscription.max_in_flight
        )

    def can_replay(self) -> bool:
        """Whether a replay request may start now (the worker holds its claims, has room)."""
        return self._rejoin is None and not self.fences.lease.fence.lost and self._has_room()

    def paused(self, assigned: Iterable[Partition]) -> set[Partition]:
        self._check_claims()
        if self._store_congested() or self.inflight.count >= self.subscription.max_in_flight:
            return set(assigned)
        return self.inflight.paused(assigned, self.subscription.max_in_flight_per_partition)

    async def assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Load stored offsets and the already-finished events after them (for dedupe)."""
        failures = 0
        while True:
            try:
                stored, done = await self._load_assignment(partitions)
                break
            except Exception as error:  # the store is down: assignment waits for it
                if self.inflight.stopping:
                    raise
                self._offsets_outage.failed(f"{type(error).__name__}: {error}")
                failures += 1
                await asyncio.sleep(ASSIGNMENT_RETRY.delay(failures))
        self._offsets_outage.recovered()
        for partition in partitions:
            self.inflight.assign(partition, stored.get(partition), done[partition])
        self.offsets.assigned(stored)
        if partitions:
            logger.info(
                "%s: assigned %s",
                self.subscription.name,
                ", ".join(f"{t}[{p}]@{stored.get((t, p), 'start')}" for t, p in sorted(partitions)),
            )
        return stored

    async def _load_assignment(
        self, partitions: Sequence[Partition]
    ) -> tuple[dict[Partition, int], dict[Partition, dict[int, FinishedRun]]]:
        """Claim newly assigned partitions, then read what the store knows of them:
        stored offsets, ended runs (the claim first: nothing the earlier holder
        writes after it is stored, so what is read here is final)."""
        group = self.source.group_id
        stored: dict[Partition, int] = {}
        if group is not None:
            epochs, crashed = await self.store.claim_partitions(
                self.flow.name, group, list(partitions), self.worker_id
            )
            self.fences.claimed(epochs)
            self._report_taken_over(crashed)
            stored = await self.store.load_offsets(group, list(partitions))
        done = {
            p: await self.store.finished_events(self.flow.name, p, stored.get(p, 0), group)
            for p in partitions
        }
        for p in partitions:  # a redelivered event whose run did not end resumes it
            unfinished = await self.store.unfinished_runs(
                self.flow.name, p, stored.get(p, 0), group
            )
            self.runs.resume_plans.assign(p, unfinished, done[p])
        return stored, done

    async def revoked(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        """Finish (within the grace period) or abandon the partitions' runs; store their offsets."""
        states = self.inflight.close(partitions)  # finishing runs start no queued successors
        if self.controls is not None:
            for delivery in self.controls.drop(set(states)):
                self._done_with_unchained(delivery, False)
        abandoned = await self.inflight.wait(
            states, self.subscription.revoke_grace_seconds, REVOKED
        )
        if abandoned:
            logger.warning(
                "%s: abandoned %d runs of revoked partitions", self.subscription.name, abandoned
            )
        dropped = self.inflight.drop_queued(states)
        if self.controls is not None:
            self.controls.release(dropped)
        # a rebalance must not wait for a store that is away: what is not stored in
        # time is not committed, and the next owner reads those events again
        offsets = await self.offsets.store(states, self.subscription.revoke_grace_seconds)
        self.inflight.remove(states)
        self.runs.resume_plans.revoke(states)
        self.offsets.revoked(states)
        self.fences.release(partitions)
        return offsets

    def _report_taken_over(self, crashed: list[CrashedRun]) -> None:
        """Runs an earlier holder left in flight on partitions this runner just claimed."""
        if crashed:
            logger.warning(
                "%s: ended %d run(s) CRASHED that an earlier holder of the newly assigned"
                " partitions left in flight (their events run again here)",
                self.subscription.name,
                len(crashed),
            )

    async def fence_out(self, fences: Sequence[Fence], reason: str) -> int:
        """The store refused claims of this runner (or the worker lost its lease): drop
        the work of those partitions at once and restart the source, which claims
        them anew. Returns how many runs in flight were cancelled."""
        partitions = self.fences.lost(fences)
        if not partitions:
            return 0
        cancelled = await self._drop(partitions)
        fenced = self.stats.fenced
        fenced["partition_claimed"] = fenced.get("partition_claimed", 0) + len(partitions)
        logger.warning(
            "%s: fenced out of %s (%s): dropped %d run(s) in flight there, nothing more of"
            " them is written; rejoining the group",
            self.subscription.name,
            ", ".join(f"{t}[{p}]" for t, p in sorted(partitions)),
            reason,
            cancelled,
        )
        self._rejoin = FencedError(f"{self.subscription.name}: fenced ({reason}); rejoining")
        return cancelled

    async def drop_everything(self, reason: str) -> int:
        """The worker lost its lease (`reason`: lease_lost, frozen): drop every run in
        flight and restart the source."""
        cancelled = await self._drop(list(self.inflight.partitions))
        # unpartitioned runs, replays, batches
        cancelled += await self.inflight.wait(None, 0, FENCED_OUT)
        self.stats.fenced[reason] = self.stats.fenced.get(reason, 0) + 1
        self._rejoin = FencedError(f"{self.subscription.name}: fenced ({reason}); rejoining")
        return cancelled

    async def _drop(self, partitions: Sequence[Partition]) -> int:
        """Cancel the runs of `partitions` now and forget them (as a revocation with no
        grace and no offsets: their claims are lost)."""
        states = self.inflight.close(partitions)
        if self.controls is not None:
            for delivery in self.controls.drop(set(states)):
                self._done_with_unchained(delivery, False)
        self.fences.release(partitions)
        cancelled = await self.inflight.wait(states, 0, FENCED_OUT)
        dropped = self.inflight.drop_queued(states)
        if self.controls is not None:
            self.controls.release(dropped)
        self.inflight.remove(states)
        self.runs.resume_plans.revoke(states)
        self.offsets.revoked(states)
        return cancelled

    # -- 1. deliver ------------------------------------------------------------------------

    async def deliver(self, events: Sequence[Event]) -> None:
        self._check_claims()
        if self.inflight.stopping:
            # fetched before the stop: partitioned events are read again by the next
            # owner; an unpartitioned source must not count them as taken
            if any(e.partition is None for e in events):
                raise WorkerStoppingError("the worker is stopping; the events were not taken")
            return
        unpartitioned = [e.id for e in events if e.partition is None]
        ended = await self._ended_or_resumed(unpartitioned) if unpartitioned else {}
        stats, accept = self.stats, self.inflight.accept
        if events:
            stats.last_event_at = time.time()
        fence_of = self.fences.of
        for event in events:
            stats.received += 1
            delivery = accept(event, ended.get(event.id) if ended else None)
            if delivery is not None:
                delivery.fence = fence_of(delivery.partition)
                self._decide(delivery)

    async def _ended_or_resumed(self, event_ids: list[str]) -> dict[str, FinishedRun]:
        """Of unpartitioned events, those whose run ended (not to run again); the
        runs of the others that did not end are looked up, for them to resume."""
        ended = await self.store.finished_event_ids(self.flow.name, event_ids)
        await self.runs.find_unfinished([i for i in event_ids if i not in ended])
        return ended

    # -- 2. decide -------------------------------------------------------------------------

    def _decide(self, delivery: Delivery) -> None:
        if delivery.previous is not None:
            self.inflight.start(delivery, self._redo(delivery))
            return
        if self.controls is not None:
            decision = self.controls.decide(delivery)
            if decision is Decision.SKIP:
                self._done_with_unchained(delivery, True)
                return
            if decision is Decision.HOLD:
                return  # the control gives it back (`_enter`, `_start_batch`)
        self._enter(delivery)

    def _enter(self, delivery: Delivery) -> None:
        """Start the event's run, or queue it behind the running event with its key."""
        if self.inflight.enter(delivery):
            self.inflight.start(delivery, self._process(delivery))

    # -- 3. run ----------------------------------------------------------------------------

    async def _process(self, delivery: Delivery) -> None:
        finished = False
        controls = self.controls
        try:
            if controls is None:
                outcome: State | Decision = await self.runs.run(delivery)
            else:
                outcome = await controls.run(delivery, self.runs.run)
            if delivery.fence is not None and delivery.fence.lost:
                pass  # fenced out: nothing of the run is stored, whoever claims it runs it
            # not run (a duplicate, cancelled: recorded), or it completed: done with
            elif isinstance(outcome, Decision) or self._counted(outcome):
                finished = True
            else:
                finished = await self._apply_failure_policy(delivery.event, outcome)
        except AdmissionAbandoned:
            pass  # the event is read again by whoever owns its partition next
        except Exception as error:
            # a bug or a broken sink, not the flow (its errors are states): keep the
            # event unfinished and stop its partition there; a restart reads it again
            self._stop_at(delivery.event, "handling event", error)
        finally:
            if controls is not None:
                controls.release((delivery,))
            self._done_with(delivery, finished)

    async def _redo(self, delivery: Delivery) -> None:
        """A redelivered event whose run already ended: never run it again.

        A completed run is simply acknowledged; a failed one has its failure
        policy applied again (the dead letter may not have been sent before a crash).
        """
        previous, event = delivery.previous, delivery.event
        assert previous is not None
        finished = True
        try:
            self.stats.skipped_duplicates += 1
            if previous.state_type not in ("COMPLETED", "CANCELLED"):  # CANCELLED: not run
                finished = await self.failure_policy.apply(event, previous.run_id, previous.error)
        except Exception as error:  # as in `_process`: the partition stops there, visibly
            self._stop_at(event, "applying the failure policy again to redelivered event", error)
            finished = False
        finally:
            self._done_with_unchained(delivery, finished)  # it never joined its key's queue

    def _stop_at(self, event: Event, what: str, error: Exception) -> None:
        """`what` failed for `event`, not the flow: the event stays unfinished and its
        partition stops there until a restart reads it again (its offset cannot pass it);
        logged, and the subscription's last error (status line, API, UI) says so."""
        message = f"{what} {event.id} failed: {error!r}; "
        if event.partition is None:
            message += "it stays unacknowledged until a restart"
        else:
            message += (
                f"partition {event.stream}[{event.partition}] stops at offset {event.offset}"
                " until a restart"
            )
        logger.error("%s: %s", self.subscription.name, message, exc_info=error)
        health = self.source.health  # not a fetch error: the source's state stays as it is
        health.last_error, health.last_error_at = message, time.time()
        self.inflight.stop_partition(event)

    def _start_batch(self, batch: list[Delivery]) -> None:
        self.inflight.spawn(
            self._process_batch(batch), {d.partition for d in batch if d.partition is not None}
        )

    async def _process_batch(self, batch: list[Delivery]) -> None:
        """A batch's one run (`FlowRuns.batch`); its events' offsets advance only after it."""
        controls = self.controls
        assert controls is not None
        finished = [False] * len(batch)
        try:
            run_id, state = await self.runs.batch(batch, controls.records)
            stats = self.stats
            stats.decide("batch", "runs")
            stats.decide("batch", "events", len(batch))
            if state.type is StateType.COMPLETED:
                stats.completed += len(batch)
                finished = [True] * len(batch)
            else:
                stats.failed += len(batch)
                self.failure_policy.notify(batch[0].event, state)
                for i, delivery in enumerate(batch):
                    finished[i] = await self.failure_policy.apply(
                        delivery.event, run_id, state.message
                    )
        finally:
            for delivery, done in zip(batch, finished, strict=True):
                self._done_with_unchained(delivery, done)
            controls.batch_ended()

    # -- 4. settle -------------------------------------------------------------------------

    def _counted(self, state: State) -> bool:
        """Count the run's outcome; True if it completed (the event is done with)."""
        stats = self.stats
        if isinstance(state.data, ParameterValidationError):
            stats.invalid += 1
        if state.type is StateType.COMPLETED:
            stats.completed += 1
            return True
        stats.failed += 1
        return False

    async def _apply_failure_policy(self, event: Event, state: State) -> bool:
        """Notify of a run that did not complete, apply the failure policy; True if done with."""
        self.failure_policy.notify(event, state)
        return await self.failure_policy.apply(event, state.run_id, state.message)

    def _done_with(self, delivery: Delivery, finished: bool, *, chained: bool = True) -> None:
        """The runtime is done with the event; `finished` lets its offset advance.

        The next event of its key starts; queued ones dropped (the partition
        going away, its run abandoned) go, with what the controls kept for them.
        """
        self.source.done_with(delivery.event, finished)
        following, dropped = self.inflight.finish(delivery, finished, chained=chained)
        if following is not None:
            self.inflight.start(following, self._process(following))
        elif dropped and self.controls is not None:
            self.controls.release(dropped)

    def _done_with_unchained(self, delivery: Delivery, finished: bool) -> None:
        """Settle an event that never joined its key's queue (skipped, held, batched, redone)."""
        self._done_with(delivery, finished, chained=False)

    # -- replays ---------------------------------------------------------------------------

    def start_replay(self, row: Mapping[str, Any]) -> None:
        """Run a claimed replay request in the background (drained, counted in flight).

        Replays bypass the flow controls: they were asked for one by one.
        """
        self.inflight.spawn(self.replay(row), counted=True)

    async def replay(self, row: Mapping[str, Any]) -> None:
        """Run a replay request claimed from the store (see `FlowRuns.replay`)."""
        self.stats.replayed += 1
        await self.runs.replay(row)

    # -- offsets and shutdown --------------------------------------------------------------

    async def commit(self) -> None:
        """Store the offsets that advanced, then commit them to the source (`OffsetCommits`)."""
        await self.offsets.commit()

    def stored_offsets(self) -> dict[Partition, int]:
        """The offsets stored with the runs, per partition of ours that has one."""
        return self.inflight.stored_offsets()

    async def drain(self, grace_seconds: float) -> int:
        """Wait for runs in flight up to `grace_seconds`, cancel the rest; how many were cancelled.

        Call after `stop_fetching()`: from then on no queued event starts.
        """
        return await self.inflight.wait(None, grace_seconds, SHUT_DOWN)

    async def stop_sink(self) -> None:
        await self.failure_policy.stop()
