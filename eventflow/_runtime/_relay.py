"""The relay: sends a destination's outbox, in order, once, from one worker at a time.

One relay per destination (`kafka:<topic>`) and store: every worker runs one,
and the worker holding the destination's lease sends. On taking the lease it
claims the destination's fence (eventflow/_store/_fences.py), then starts its
transport, which fences any earlier sender at the destination itself (Kafka:
the transactional id), and reads the number of the last batch the destination
took. Messages the store shows in a batch up to that number were published
(a crash came between the destination's commit and the store's mark): they
are marked, not sent again. Then, in a loop, the oldest pending messages (at
most `batch_size`) get the next batch number in the store, go out in one
transaction of the destination, and are marked published.

Any error ends the transport; after a backoff the relay starts again from the
recovery above, so an outcome it did not see (a commit that timed out but took
effect) is read from the destination, never guessed. A relay that cannot
publish logs one WARNING with the error and how many messages wait, and one
INFO once it publishes again; its state and backlog are in `RelayStats`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
from anyio.abc import TaskGroup
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import describe_error
from .._outbox import DESTINATIONS, Transport
from .._retries import Backoff
from .._store import _outbox as outbox
from .._store._fences import claim
from .._store._leases import acquire_lease, release_lease

logger = logging.getLogger("eventflow.outbox")

RELAY_RETRY = Backoff(initial=0.5, maximum=10.0, jitter=0.1)


@dataclass(slots=True)
class RelayStats:
    """What the metrics and the status show of one destination's relay."""

    destination: str
    state: str = "idle"
    """`idle` (nothing to publish), `standby` (another worker relays), `publishing`, or
    `failing` (see `last_error`)."""
    published: int = 0
    """Messages this worker published (a counter)."""
    pending: int = 0
    oldest_pending_at: float | None = None
    last_error: str | None = None

    def oldest_age(self, now: float | None = None) -> float:
        if self.oldest_pending_at is None:
            return 0.0
        return max(0.0, (now or time.time()) - self.oldest_pending_at)


class Relay:
    """Sends the outbox of `destination` while this worker holds its lease (see the module)."""

    lease_seconds = 10.0
    batch_size = 500
    idle_poll = 0.05
    """Seconds between looks at the outbox while it is empty, relaying."""
    idle_exit = 30.0
    """Seconds without a message after which a relay lets its lease and producer go."""

    def __init__(
        self,
        destination: str,
        transport: Callable[[], Transport],
        engine: AsyncEngine,
        holder: str,
    ) -> None:
        self.destination = destination
        self.make_transport = transport
        self.engine = engine
        self.holder = holder
        self.scope = outbox.outbox_scope(destination)
        self.stats = RelayStats(destination)
        self.failures = 0
        self.retry_at = 0.0
        """When (monotonic) to try again after a failure."""
        self._warned = False

    async def run_once(self) -> None:
        """Relay while the lease is held and there is work; errors are logged (see `_failed`)."""
        try:
            if not await acquire_lease(self.engine, self.scope, self.holder, self.lease_seconds):
                self.stats.state = "standby"
                return
            try:
                await self._relay_while_held()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                    await release_lease(self.engine, self.scope, self.holder)
            self.failures = 0
        except Exception as error:
            self.failures += 1
            self.retry_at = time.monotonic() + RELAY_RETRY.delay(self.failures)
            self._failed(error)

    async def _relay_while_held(self) -> None:
        async with self.engine.begin() as conn:
            epoch = (await claim(conn, [self.scope], self.holder))[self.scope]
        token = (self.scope, epoch)
        transport = self.make_transport()
        try:
            await transport.start()
            committed = await transport.committed()
            await self._mark(token, committed)
            attempt = max(committed, await outbox.last_attempt(self.engine, self.destination))
            renewed = busy = time.monotonic()
            while True:
                now = time.monotonic()
                if now - renewed > self.lease_seconds / 3:
                    if not await acquire_lease(
                        self.engine, self.scope, self.holder, self.lease_seconds
                    ):
                        return  # another worker relays from now on
                    renewed = now
                rows = await outbox.pending(self.engine, self.destination, self.batch_size)
                if not rows:
                    self._publishing()
                    self.stats.pending, self.stats.oldest_pending_at = 0, None
                    if now - busy > self.idle_exit:
                        self.stats.state = "idle"
                        return
                    await asyncio.sleep(self.idle_poll)
                    continue
                busy = now
                attempt += 1
                if not await outbox.assign(self.engine, token, [r["seq"] for r in rows], attempt):
                    return  # fenced: another relay took over
                await transport.send(rows, attempt)
                await self._mark(token, attempt)
                self.stats.published += len(rows)
                self._publishing()
        finally:
            # shielded: a worker shutting down cancels the relay, and a producer left
            # unstopped leaks its connections
            with anyio.CancelScope(shield=True), anyio.move_on_after(30):
                try:
                    await transport.stop()
                except Exception as error:
                    logger.debug("stopping the transport of %s: %s", self.destination, error)

    async def _mark(self, token: tuple[str, int], attempt: int) -> None:
        if attempt > 0:
            await outbox.mark_published(self.engine, token, self.destination, attempt)

    def _publishing(self) -> None:
        if self.stats.state == "failing":
            logger.info("%s: publishing again", self.destination)
            self._warned = False
        self.stats.state = "publishing"
        self.stats.last_error = None

    def _failed(self, error: BaseException) -> None:
        self.stats.state = "failing"
        self.stats.last_error = describe_error(error)
        if not self._warned:
            self._warned = True
            logger.warning(
                "%s: cannot publish (%d message(s) waiting, kept in the outbox and published"
                " in order once it can): %s",
                self.destination,
                self.stats.pending,
                self.stats.last_error,
            )


class Relays:
    """A worker's relays: one look a second at the outbox's backlog, by destination, and
    a relay started for each destination with messages waiting that a sink of this
    process registered (eventflow/_outbox.py)."""

    check_interval = 1.0

    def __init__(self, engine: AsyncEngine, holder: str) -> None:
        self.engine = engine
        self.holder = holder
        self.by_destination: dict[str, Relay] = {}
        self._running: set[str] = set()
        """Destinations whose relay is running now."""

    @property
    def all(self) -> list[Relay]:
        return list(self.by_destination.values())

    def _relay(self, destination: str) -> Relay | None:
        relay = self.by_destination.get(destination)
        if relay is None and (transport := DESTINATIONS.get(destination)) is not None:
            relay = Relay(destination, transport, self.engine, self.holder)
            self.by_destination[destination] = relay
        return relay

    async def run(self) -> None:
        """Until cancelled; the relays it starts belong to its task group and end with it."""
        async with anyio.create_task_group() as relays:
            while True:
                try:
                    await self._check(relays)
                except Exception as error:  # the store is away: the worker says so already
                    logger.debug("reading the outbox's backlog: %s", describe_error(error))
                await anyio.sleep(self.check_interval)

    async def _check(self, relays: TaskGroup) -> None:
        backlog = await outbox.backlogs(self.engine)
        for destination in {*backlog, *self.by_destination}:
            relay = self._relay(destination)
            if relay is None:
                continue  # no sink for it here: a worker that has one relays it
            relay.stats.pending, relay.stats.oldest_pending_at = backlog.get(destination, (0, None))
            if destination in self._running:
                continue
            if relay.stats.pending and time.monotonic() >= relay.retry_at:
                self._running.add(destination)
                relays.start_soon(self._run_once, relay)

    async def _run_once(self, relay: Relay) -> None:
        """One relay's turn (`Relay.run_once` logs its own errors)."""
        try:
            await relay.run_once()
        finally:
            self._running.discard(relay.destination)
