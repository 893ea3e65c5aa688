"""RunGate: what an event passes right before its run starts.

First the idempotency claim (a duplicate takes no slot and no token), then
the admission gate (concurrency, rate limit, priority: `_limits`). A run
waiting at either is recorded PENDING with the reason; a duplicate is
recorded CANCELLED "Duplicate", linked to the run that completed its key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from .._metrics import RECORDER
from .._retries import Backoff
from .._states import State, StateType
from .._store._runstore import COMPLETED, RELEASED, RunStore, stored_key
from .._store._writer import RunWriter
from ._claims import KeyClaims
from ._control_options import (
    MESSAGE_ID_KEY,
    Controls,
    by_message_id,
    evaluate_key,
    evaluate_priority,
)
from ._delivery import Delivery
from ._limits import Admission, AdmissionAbandoned, Ticket
from ._records import ControlRecords
from ._source import Event
from ._subscription import RunnerStats

logger = logging.getLogger("eventflow.runtime")

_WAIT_STATE = {"concurrency": "AwaitingConcurrency", "rate_limit": "Throttled"}
"""The state_name of a PENDING run waiting for a control."""

CLAIM_RETRY = Backoff(initial=0.02, maximum=0.5, jitter=0.0)
"""Between polls of a key another live run holds, or of a store that is away."""

Run = Callable[[Delivery, str], Awaitable[State]]


class RunGate:
    """The idempotency claim and the admission gate of one subscription (see the module)."""

    def __init__(
        self,
        controls: Controls,
        *,
        name: str,
        flow_name: str,
        worker_id: str,
        store: RunStore,
        writer: RunWriter,
        records: ControlRecords,
        stats: RunnerStats,
        abandoning: Callable[[Event], bool],
        start_helper: Callable[[Coroutine[Any, Any, None]], None],
        group: str | None = None,
    ) -> None:
        self.controls = controls
        self.group = group
        """The consumer group: message ids are recognised per group."""
        self.name = name
        self.flow_name = flow_name
        self.writer = writer
        self.records = records
        self.stats = stats
        self.abandoning = abandoning
        """True once an event must not start any more (stopping, its partition going away)."""
        self.admission: Admission | None = None
        if controls.gated:
            self.admission = Admission(controls, waiting=stats.waiting)
        self.claims: KeyClaims | None = None
        if controls.idempotency_key is not None:
            self.claims = KeyClaims(
                store,
                flow_name,
                worker_id,
                controls.idempotency_window,
                lambda key, run_id: self._finish_claim(key, run_id, False),
                start_helper,
            )

    async def run(self, delivery: Delivery, run_id: str, run: Run) -> State | None:
        """Run `delivery` once it passed; None when it must not run (a duplicate)."""
        controls, document = self.controls, delivery.document
        if controls.idempotency_key is by_message_id:
            key = self._message_id(delivery.event)
        else:
            key = evaluate_key(controls.idempotency_key, document)
        if key is not None:
            key = stored_key(key)
        claimed = settled = False
        ticket: Ticket | None = None
        try:
            if key is not None:
                original = await self._claim(delivery.event, key, run_id)
                if original is not None:
                    self._record_duplicate(delivery.event, run_id, key, original)
                    return None
                claimed = True
            if self.admission is not None:
                ticket = self.admission.ticket(
                    evaluate_key(controls.concurrency_key, document),
                    evaluate_key(controls.rate_limit_key, document),
                    evaluate_priority(controls.priority, document),
                    owner=delivery.partition,
                )
                await self._admit(delivery.event, run_id, ticket)
            state = await run(delivery, run_id)
            if claimed:
                self._finish_claim(key, run_id, state.type is StateType.COMPLETED)
                settled = True
            return state
        finally:
            if ticket is not None and self.admission is not None:
                self.admission.release(ticket)
            if claimed and not settled:
                self._finish_claim(key, run_id, False)

    def _message_id(self, event: Event) -> str | None:
        """The event's message id, per consumer group (None: it has none)."""
        for name, value in event.headers:
            if name == MESSAGE_ID_KEY:
                return f"{self.group or ''}/{value.decode('utf-8', 'replace')}"
        return None

    def abandon(self, owned: Callable[[object], bool]) -> None:
        """Waiting events whose owner (partition) `owned` selects stop waiting."""
        if self.admission is not None:
            self.admission.abandon(lambda ticket: owned(ticket.owner))

    def close(self) -> None:
        """Every waiting event stops waiting, and none waits from now on."""
        if self.admission is not None:
            self.admission.abandon(lambda _ticket: True)
            self.admission.close()

    async def _admit(self, event: Event, run_id: str, ticket: Ticket) -> None:
        """Until the gate lets the event start; a waiting run is PENDING with the reason."""
        assert self.admission is not None
        stats = self.stats
        if not self.admission.offer(ticket):
            reason = ticket.waited_for[0]
            waited_since = time.time()
            self.records.run(event, run_id, "PENDING", _WAIT_STATE[reason], ended=False)
            self.records.log(run_id, f"waiting: {self._wait_text(reason, ticket)}")
            try:
                await self.admission.wait(ticket)
            except (AdmissionAbandoned, asyncio.CancelledError):
                stats.decide(reason, "abandoned")
                self.records.run(
                    event,
                    run_id,
                    "CRASHED",
                    "Abandoned",
                    error="the worker stopped or lost the partition before the run could start;"
                    " the event is delivered again",
                )
                raise
            self.records.log(
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
        polls = 0
        try:
            while True:
                if self.abandoning(event):
                    stats.decide("idempotency", "abandoned")
                    raise AdmissionAbandoned()
                assert self.claims is not None
                try:
                    claim = await self.claims.claim(key, run_id)
                except Exception as error:  # the store is down: wait for it
                    logger.log(
                        logging.DEBUG if polls else logging.WARNING,
                        "%s: cannot claim idempotency key %r, retrying: %s",
                        self.name,
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
                if not polls:
                    stats.waiting["idempotency"] += 1
                    stats.decide("idempotency", "waited")
                polls += 1
                await asyncio.sleep(CLAIM_RETRY.delay(polls))
        finally:
            if polls:
                stats.waiting["idempotency"] -= 1

    def _finish_claim(self, key: str | None, run_id: str, completed: bool) -> None:
        self.writer.put_idempotency(
            {
                "flow_name": self.flow_name,
                "key": key,
                "run_id": run_id,
                "state": COMPLETED if completed else RELEASED,
                "completed_at": time.time() if completed else None,
            }
        )

    def _record_duplicate(self, event: Event, run_id: str, key: str, original: str) -> None:
        """A CANCELLED "Duplicate" run linked to the run that completed the key."""
        self.stats.skipped_duplicates += 1
        self.records.run(event, run_id, "CANCELLED", "Duplicate", linked_run_id=original)
        self.records.log(
            run_id,
            f"not run: idempotency key {key!r} was completed by run {original} within the"
            f" window of {self.controls.idempotency_window:g}s",
        )
        RECORDER.run_finished("flow", self.flow_name, "CANCELLED", None)
