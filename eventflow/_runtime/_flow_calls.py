"""FlowRuns: how an event (a replay, a batch) becomes one `run_flow` call.

The event's bytes go to the flow's parameter model as they are (pydantic
validates JSON itself) unless a flow control decoded them already: then, as
with `params`, the one decoded copy of the delivery is used. A replay goes
through the same decoding as when its event first arrived.

A delivered event whose earlier run did not end (a crash, an abandoned
revoke) resumes that run: its plan (eventflow/_resume.py) was loaded when the
partition was assigned (Kafka) or when the event was delivered (unpartitioned
sources). A retry (`runs retry`) resumes the run it retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import orjson

from .._engine import EventInfo, run_flow
from .._flows import Flow
from .._ids import new_id
from .._resume import Resume, ResumePlans
from .._retries import Backoff
from .._states import State, StateType
from .._store._runstore import RunStore
from .._store._traces import trace_context
from .._store._writer import RunWriter
from .._tracing import TRACING
from ._delivery import Delivery, partition_of
from ._fencing import PartitionFences
from ._records import ControlRecords
from ._source import Event, Source
from ._subscription import ParamsOverride

logger = logging.getLogger("eventflow.runtime")

STORE_RETRY = Backoff(initial=0.1, maximum=5.0, jitter=0.0)


class FlowRuns:
    """Runs a subscription's flow for its events (see the module)."""

    def __init__(
        self,
        flow: Flow[Any, Any],
        writer: RunWriter,
        store: RunStore,
        *,
        fences: PartitionFences,
        worker_id: str,
        source: Source,
        params: ParamsOverride | None,
        stopping: Callable[[], bool],
    ) -> None:
        self.flow = flow
        self.writer = writer
        self.store = store
        self.fences = fences
        self.worker_id = worker_id
        self.source_name = source.name
        self.group = source.group_id
        self.params = params
        self.resume_plans = ResumePlans()
        self._stopping = stopping
        self.messaging_system = source.messaging_system
        TRACING.setup()  # each worker, once its subscriptions are built

    async def find_unfinished(self, event_ids: Sequence[str]) -> None:
        """Hold the plans of unpartitioned events whose earlier run did not end, for
        their new runs to resume (Kafka's are loaded at assignment)."""
        if event_ids:
            found = await self.store.unfinished_event_runs(self.flow.name, event_ids)
            self.resume_plans.hold(found)

    async def run(
        self,
        delivery: Delivery,
        run_id: str | None = None,
        retry_of: str | None = None,
        resume: Resume | None = None,
    ) -> State:
        """Run the flow for one event; its final state (a flow's errors are states)."""
        event = delivery.event
        if retry_of is None:  # a delivery, not a replay: resume its unfinished run, if any
            resume = self.resume_plans.take(event.stream, event.partition, event.offset, event.id)
        if TRACING.on:
            earlier = retry_of or (None if resume is None else resume.run_id)
            with TRACING.incoming(
                event.headers,
                self.messaging_system,
                await self._trace_context(earlier),
                "resumes" if retry_of is None else "retries",
            ):
                return await self._flow_run(delivery, run_id, retry_of, resume)
        return await self._flow_run(delivery, run_id, retry_of, resume)

    async def _trace_context(self, run_id: str | None) -> str | None:
        """The stored trace context of the run this one resumes or retries."""
        engine = getattr(self.store, "engine", None)
        if run_id is None or engine is None:
            return None
        return await trace_context(engine, run_id)

    def _flow_run(
        self, delivery: Delivery, run_id: str | None, retry_of: str | None, resume: Resume | None
    ) -> Coroutine[Any, Any, State]:
        """The flow's run for the event, not awaited yet (no coroutine of its own)."""
        event = delivery.event
        info = EventInfo(
            source=event.stream or self.source_name,
            id=event.id,
            key=event.key,
            partition=event.partition,
            offset=event.offset,
            payload=event.value,
            timestamp=event.timestamp,
            group=self.group,
        )
        fence = delivery.fence or self.fences.of(delivery.partition)
        params = self.params
        if params is None:
            return run_flow(
                self.flow,
                self.writer,
                raw_parameters=event.value,
                decoded=delivery.decoded_so_far,
                event=info,
                worker_id=self.worker_id,
                flow_run_id=run_id,
                retry_of=retry_of,
                resume=resume,
                fence=fence,
            )
        try:
            override = params(event) if callable(params) else params
            decoded = {} if callable(params) else delivery.decoded()
            if not isinstance(decoded, dict):
                raise TypeError("the event is not a JSON object")
            kwargs = {**self._flow_parameters(decoded), **override}
        except Exception as error:
            kwargs = {"__invalid_event__": f"{type(error).__name__}: {error}"}
        return run_flow(
            self.flow,
            self.writer,
            kwargs=kwargs,
            event=info,
            worker_id=self.worker_id,
            flow_run_id=run_id,
            retry_of=retry_of,
            resume=resume,
            fence=fence,
        )

    def _flow_parameters(self, decoded: dict[str, Any]) -> dict[str, Any]:
        """The event's keys the flow takes: like a plain event, extra keys are ignored.

        (A schedule's `scheduled_at` must not fail a flow that does not take it.)
        """
        parameters = self.flow.signature.parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
            return decoded
        return {k: v for k, v in decoded.items() if k in parameters}

    async def replay(self, row: Mapping[str, Any]) -> None:
        """Run a replay request claimed from the store (`claim_replays`), with its run id.

        The outcome is only recorded (no dead letter, no offsets: the event was
        dealt with the first time).
        """
        resumed = row.get("resumed_from")  # runs retry: reuse what that run completed
        resume = None if resumed is None else await self._kept_results(resumed)
        if row["event_payload"] is None:  # a direct call's run: its stored parameters
            with contextlib.ExitStack() as tracing:
                if TRACING.on and row["retry_of"] is not None:
                    earlier = await self._trace_context(row["retry_of"])
                    tracing.enter_context(TRACING.incoming((), None, earlier, "retries"))
                await run_flow(
                    self.flow,
                    self.writer,
                    kwargs=orjson.loads(row["parameters"] or "{}"),
                    worker_id=self.worker_id,
                    flow_run_id=row["id"],
                    retry_of=row["retry_of"],
                    resume=resume,
                    fence=self.fences.lease.fence,
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
        delivery = Delivery(event, partition_of(event))
        delivery.fence = self.fences.lease.fence  # a replay is not its partition's delivery
        await self.run(delivery, row["id"], row["retry_of"], resume)

    async def _kept_results(self, run_id: str) -> Resume:
        """What the run a retry resumes kept; read again while the store is down (the
        claimed retry must neither start over nor be left RUNNING)."""
        failures = 0
        while True:
            try:
                return await self.store.run_results(run_id)
            except Exception as error:
                if self._stopping():
                    raise
                failures += 1
                if failures == 1:
                    logger.warning(
                        "%s: cannot read the results of %s to resume it, retrying: %s",
                        self.flow.name,
                        run_id,
                        error,
                    )
                await asyncio.sleep(STORE_RETRY.delay(failures))

    async def batch(self, batch: list[Delivery], records: ControlRecords) -> tuple[str, State]:
        """One run of the flow with the events' JSON objects as a list (its first parameter).

        Every event gets a record of the batch run's final state, named
        "Batched" and linked to it. Returns the batch run's id and state.
        """
        run_id = new_id()
        events = [d.event for d in batch]
        records.log(
            run_id,
            f"a batch of {len(events)} events: "
            + ", ".join(e.id for e in events[:50])
            + (", ..." if len(events) > 50 else ""),
        )
        with contextlib.ExitStack() as tracing:
            if TRACING.on:
                headers = [d.event.headers for d in batch]
                tracing.enter_context(TRACING.incoming_batch(headers, self.messaging_system))
            state = await run_flow(
                self.flow,
                self.writer,
                args=([d.document for d in batch],),
                worker_id=self.worker_id,
                flow_run_id=run_id,
                fence=self.fences.lease.fence,
            )
        completed = state.type is StateType.COMPLETED
        for event in events:
            records.run(
                event,
                new_id(),
                state.type.value,
                "Batched",
                error=None if completed else state.message,
                linked_run_id=run_id,
            )
        return run_id, state
