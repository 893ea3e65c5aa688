"""The worker's housekeeping: heartbeats, crash sweeps, replays, retention, status, metrics.

Each is a loop the App's task group owns for as long as it serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import orjson

from .._errors import describe_error
from .._logging import STATUS_LINE
from .._metrics import MetricsExporter
from .._notify import Notification
from .._settings import Settings
from .._store._runstore import RunStore, Sweep
from .._store._writer import RunWriter
from ._fencing import WorkerLease
from ._liveness import Outage, WorkerHealth
from ._runner import SubscriptionRunner
from ._subscription import Notifier

logger = logging.getLogger("eventflow.runtime")


class Housekeeping:
    """The worker-wide loops beside the subscriptions (see the module)."""

    def __init__(
        self,
        runners: Sequence[SubscriptionRunner],
        *,
        writer: RunWriter,
        store: RunStore,
        worker_id: str,
        settings: Settings,
        health: WorkerHealth,
        notifiers: Callable[[str | None], list[Notifier]],
    ) -> None:
        self.runners = runners
        self.writer = writer
        self.store = store
        self.worker_id = worker_id
        self.settings = settings
        self.health = health
        self.notifiers = notifiers

    async def report(self, every: float = 15.0) -> None:
        """A status line per subscription in the worker's log, while there is news."""
        last: list[tuple[int, int, str, bool]] = [(-1, -1, "", True)] * len(self.runners)
        while True:
            await asyncio.sleep(every)
            for i, runner in enumerate(self.runners):
                stats = runner.stats
                now = (stats.received, runner.in_flight, runner.health.state, self.writer.healthy)
                if now == last[i]:
                    continue
                last[i] = now
                logger.info(
                    "%s: %s, received %d, completed %d, failed %d, dead-lettered %d, in flight %d,"
                    " store %s with %d queued",
                    runner.subscription.name,
                    runner.health.state,
                    stats.received,
                    stats.completed,
                    stats.failed,
                    stats.dead_lettered,
                    runner.in_flight,
                    "healthy" if self.writer.healthy else "UNAVAILABLE",
                    self.writer.pending,
                )

    async def live_status(self, every: float = 1.0) -> None:
        """In a terminal: one line on stderr, rewritten every second (events/s, in flight...)."""
        previous = [runner.stats.received for runner in self.runners]
        try:
            while True:
                await asyncio.sleep(every)
                parts = []
                for i, runner in enumerate(self.runners):
                    stats = runner.stats
                    rate = (stats.received - previous[i]) / every
                    previous[i] = stats.received
                    state = runner.health.state
                    parts.append(
                        f"{runner.subscription.name}: {rate:,.0f} events/s, {stats.received:,} in,"
                        f" {runner.in_flight:,} in flight, {stats.failed:,} failed"
                        + ("" if state == "running" else f", {state.upper()}")
                    )
                store = "store ok" if self.writer.healthy else "STORE UNAVAILABLE"
                STATUS_LINE.show(f"{' | '.join(parts)} | {store}")
        finally:
            STATUS_LINE.close()

    async def publish(self, exporter: MetricsExporter) -> None:
        """Every second: liveness and metrics; the subscriptions' states into the store every 5."""
        tick = 0
        store_outage = Outage("run store")
        while True:
            await asyncio.sleep(1.0)
            try:
                self._check_health(store_outage)
                exporter.sync(self.runners, self.writer, self.health.read())
                tick += 1
                if tick % 5 == 0:
                    self.put_source_status()
            except Exception:  # never let a metrics bug stop the metrics for good
                logger.exception("exporting metrics failed")

    def _check_health(self, store_outage: Outage) -> None:
        """Update the subscriptions' states, log outage summaries, publish the probes' verdict."""
        now = time.time()
        verdicts = []
        for runner in self.runners:
            lag = runner.source.lag()
            source = runner.source
            runner.health.update(
                received=runner.stats.received,
                finished=runner.stats.completed + runner.stats.failed,
                lag=sum(lag.values()) if lag else (None if source.failing else 0),
                source_failing=source.failing,
                stopping=runner.stopping,
                store_up=self.writer.healthy,
                now=now,
            )
            if source.failing and runner.health.received_moved:
                # events arrive: whatever failed works again (for a source that
                # records its errors but never says when it recovered)
                source.record_ok()
            source.health.outage.tick(now)
            for outage in runner.outages:
                outage.tick(now)
            verdicts.append(runner.health.verdict(now))
        store_outage.watch(not self.writer.healthy, self.writer.last_error, now)
        self.health.publish(verdicts, store_up=self.writer.healthy, now=now)

    def put_source_status(self) -> None:
        now = time.time()
        for runner in self.runners:
            stats, source, health = runner.stats, runner.source, runner.health
            lag = source.lag()
            self.writer.put_source_status(
                {
                    "worker_id": self.worker_id,
                    "subscription": runner.subscription.name,
                    "source": source.name,
                    "flow_name": runner.flow.name,
                    "received": stats.received,
                    "completed": stats.completed,
                    "failed": stats.failed,
                    "dead_lettered": stats.dead_lettered,
                    "in_flight": runner.in_flight,
                    "lag": sum(lag.values()) if lag else None,
                    "last_event_at": stats.last_event_at,
                    "last_error": source.last_error,
                    "last_error_at": source.last_error_at,
                    "updated_at": now,
                    "state": health.state,
                    "state_since": health.since,
                    "store_up": self.writer.healthy,
                    "partitions": partitions_json(runner, lag),
                }
            )

    async def claim_replays(self, every: float = 1.0) -> None:
        """Run the replay requests (API, CLI, UI) of this worker's flows."""
        by_flow: dict[str, SubscriptionRunner] = {}
        for runner in self.runners:
            by_flow.setdefault(runner.flow.name, runner)
        outage = Outage("reading replay requests from the run store")
        while True:
            await asyncio.sleep(every)
            room = {
                name: runner.subscription.max_in_flight - runner.in_flight
                for name, runner in by_flow.items()
                if runner.can_replay()
            }
            flows = [name for name, free in room.items() if free > 0]
            try:
                claimed = await self.store.claim_replays(
                    flows, self.worker_id, limit=min([100, *(room[f] for f in flows)])
                )
            except Exception as error:  # the store is away: quietly, it is logged already
                outage.failed(describe_error(error))
                outage.tick()
                continue
            outage.recovered()
            for row in claimed:
                logger.info("replaying flow run %s as %s", row["retry_of"], row["id"])
                by_flow[row["flow_name"]].start_replay(row)

    async def retain(self, retention: float) -> None:
        """Delete runs older than `retention`; one worker of the app at a time does it."""
        every = min(3600.0, max(1.0, retention / 4))
        while True:
            await asyncio.sleep(every)
            try:
                if not await self.store.acquire_lease(
                    "eventflow:retention", self.worker_id, every * 2
                ):
                    continue
                deleted = await self.store.prune(time.time() - retention)
            except Exception as error:
                logger.warning("retention: pruning old runs failed: %s", describe_error(error))
                continue
            if deleted:
                logger.info("retention: deleted %d runs older than %.0fs", deleted, retention)

    async def heartbeat(self, lease: WorkerLease) -> None:
        while True:
            await asyncio.sleep(self.settings.worker_lease / 5)
            lease.put_heartbeat()

    async def watch_clock(self, on_frozen: Callable[[float], None], every: float = 1.0) -> None:
        """Notice that this process was frozen (SIGSTOP, a VM pause, a GC or swap stall)
        for longer than the lease: by then another worker may have declared it dead
        and taken its work over, so it must fence itself before it writes on."""
        clocks = _frozen_clocks()
        last = [clock() for clock in clocks]
        while True:
            await asyncio.sleep(every)
            now = [clock() for clock in clocks]
            gap = max(n - t for n, t in zip(now, last, strict=True)) - every
            last = now
            if gap > self.settings.worker_lease:
                on_frozen(gap)

    async def sweep(self) -> None:
        """Mark the runs of dead workers CRASHED, from time to time.

        Only after the store has been healthy for a whole lease: during an
        outage nobody's heartbeat is written, and every worker looks dead.
        """
        while True:
            await asyncio.sleep(self.settings.worker_lease / 2)
            if (
                not self.writer.healthy
                or time.time() - self.writer.healthy_since < self.settings.worker_lease
            ):
                continue
            try:
                sweep = await self.store.sweep_crashed(self.settings.worker_lease, self.worker_id)
            except Exception as error:
                logger.warning("crash sweep failed: %s", describe_error(error))
                continue
            self.report_sweep(sweep)

    def report_sweep(self, sweep: Sweep) -> None:
        """Log the dead workers found, and notify of their runs that crashed."""
        if not sweep.workers:
            return
        logger.warning(
            "marked %d in-flight runs of dead worker(s) %s CRASHED",
            len(sweep.runs),
            ", ".join(sweep.workers),
        )
        for run in sweep.runs:
            notification = Notification(
                flow_name=run.flow_name,
                flow_run_id=run.run_id,
                run_name=run.run_name,
                state="CRASHED",
                state_name="Crashed",
                error="the worker running it stopped heartbeating (killed or crashed)",
                event_id=run.event_id,
                event_key=run.event_key,
            )
            for notifier in self.notifiers(run.flow_name):
                try:  # one notifier that raises must not hide the others' messages
                    notifier.notify(notification)
                except Exception:
                    logger.exception("notifier %r failed for crashed run %s", notifier, run.run_id)


def partitions_json(runner: SubscriptionRunner, lag: Mapping[tuple[str, int], int]) -> str | None:
    """Per partition: lag, next offset to read, stored and committed offsets (the UI's view)."""
    positions = runner.source.positions()
    stored = runner.stored_offsets()
    partitions = set(lag) | set(positions) | set(stored) | set(runner.committed)
    if not partitions:
        return None
    return orjson.dumps(
        {
            f"{topic}/{partition}": {
                "lag": lag.get((topic, partition)),
                "position": positions.get((topic, partition)),
                "stored": stored.get((topic, partition)),
                "committed": runner.committed.get((topic, partition)),
            }
            for topic, partition in sorted(partitions)
        }
    ).decode()


def _frozen_clocks() -> list[Callable[[], float]]:
    """Clocks that see a freeze: the monotonic one, and (Linux) the one that also counts
    a suspended machine, which the monotonic clock does not."""
    clocks: list[Callable[[], float]] = [time.monotonic]
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is not None:
        clocks.append(lambda: time.clock_gettime(boottime))
    return clocks
