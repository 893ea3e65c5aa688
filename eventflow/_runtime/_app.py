"""App: the long-running worker that binds sources to flows."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from functools import partial
from typing import Any, Unpack

import anyio

from .._datasets import period_seconds
from .._flows import Flow
from .._logging import configure_logging
from .._metrics import MetricsExporter
from .._metrics_multiprocess import multiprocess_dir
from .._results import configure as keep_results
from .._settings import Settings
from .._store._fences import Fence
from .._store._migrate import upgrade
from .._store._runstore import SqlRunStore
from .._store._writer import RunWriter
from ._checks import check_subscription
from ._control_options import ControlOptions, Controls
from ._fencing import WorkerLease
from ._housekeeping import Housekeeping
from ._lineage_loop import LineageLoop, check_declarations
from ._liveness import SubscriptionHealth, WorkerHealth
from ._rejoin import Rejoin
from ._relay import Relays
from ._runner import SubscriptionRunner
from ._source import Event, Sink, Source
from ._subscription import FailurePolicy, Notifier, Subscription
from ._supervise import SourceEndedError, commit_loop, supervise_source

__all__ = ["App", "SourceEndedError", "tune_worker_process"]

logger = logging.getLogger("eventflow.runtime")


WORKER_SWITCH_INTERVAL = 0.001
"""Seconds a thread may hold the GIL while another waits for it (Python's default: 0.005).

The event loop and the store's writer thread share the GIL; at the default,
each waits up to 5 ms for the other. 1 ms gave 5-12% more tracked events/s in
bench/_eventflow_kafka.py (100,000 events, three runs each way).
"""


def tune_worker_process() -> None:
    """Interpreter settings for a process that is an eventflow worker and nothing else."""
    sys.setswitchinterval(WORKER_SWITCH_INTERVAL)


class App:
    """Binds sources to flows and runs them: every event becomes one tracked flow run.

    The store comes from `settings` (default: `Settings.from_env()`, so
    `EVENTFLOW_DATABASE_URL`). Nothing starts until `run()` / `serve()`.
    """

    def __init__(
        self, settings: Settings | None = None, *, notifiers: Sequence[Notifier] = ()
    ) -> None:
        self.settings = settings
        self.notifiers = tuple(notifiers)
        self.subscriptions: list[Subscription] = []
        self.runners: list[SubscriptionRunner] = []
        self.worker_id: str | None = None
        self.lease: WorkerLease | None = None
        self.lineage: LineageLoop | None = None
        self.started = asyncio.Event()
        self.health = WorkerHealth()
        """The last health check, read by the probe endpoint's thread (see `_check_health`)."""
        self._shutting_down = False

    def subscribe(
        self,
        source: Source,
        flow: Flow[Any, Any],
        *,
        on_failure: FailurePolicy | None = None,
        dead_letter: Sink | None = None,
        max_in_flight: int = 1024,
        max_in_flight_per_partition: int = 256,
        key_ordering: bool = True,
        params: Mapping[str, Any] | Callable[[Event], Mapping[str, Any]] | None = None,
        revoke_grace_seconds: float = 10.0,
        notifiers: Sequence[Notifier] = (),
        expect_every: timedelta | float | None = None,
        **controls: Unpack[ControlOptions],
    ) -> Subscription:
        """Run `flow` once per event of `source`.

        `on_failure` says where an event goes after its run failed (retries
        spent, or a poison message): `"dead_letter"` (to `dead_letter`, else the
        source's default, a Kafka source's `<topic>.dlq`), `"skip"`, or `"stop"`
        (the partition stops there until a restart); left out, it is
        `"dead_letter"` where there is a destination and `"skip"` where there is
        none. A subscription that cannot work is refused here (ConfigurationError).
        `params` overrides or
        replaces the parameters decoded from the event. `notifiers` (with the
        app's) are told of every run that ends FAILED or CRASHED.

        Flow controls, keyed by a function of the event's JSON object (a
        callable, or a dotted path like `"order.customer_id"`):
        `concurrency=N` runs at most N at once (per `concurrency_key` value);
        `rate_limit="100/s"` (or `/m`, `/h`; per `rate_limit_key` value) starts
        runs no faster, later ones wait; `idempotency_key` runs an event whose
        key a run already completed within `idempotency_window` as a CANCELLED
        "Duplicate" instead; `priority` (a number) starts the waiting events
        highest first; `debounce=timedelta(...)` runs only the last event (per
        `debounce_key` value) of a burst once no other came for that long, the
        others ending CANCELLED "Debounced"; `batch_size=N` runs the flow with
        a list of up to N events' objects (after `batch_timeout` with fewer),
        one batch at a time; `singleton_key` allows one run per key value in
        this worker: a later event is skipped (`singleton_mode="skip"`) or
        cancels the run in flight (`"cancel"`); an event for which `cancel_on`
        gives a key is a signal, not run: it cancels the runs in flight (or
        waiting) whose `cancel_key` is that key. Waiting events count as in flight.

        `expect_every=timedelta(...)` expects at least one event per period from
        the source: after a period without one, its dataset is late and the flows
        downstream of it affected (see the guide "Lineage and late data").
        """
        on_failure = check_subscription(
            source,
            flow,
            on_failure=on_failure,
            dead_letter=dead_letter,
            params=params,
            batch_size=controls.get("batch_size"),
        )
        if on_failure not in ("dead_letter", "skip", "stop"):
            raise ValueError(
                f"on_failure must be 'dead_letter', 'skip' or 'stop', not {on_failure!r}"
            )
        if max_in_flight < 1 or max_in_flight_per_partition < 1:
            raise ValueError("in-flight bounds must be >= 1")
        built = Controls.build(**controls)
        expect = period_seconds(expect_every, "expect_every")
        subscription = Subscription(
            source=source,
            flow=flow,
            on_failure=on_failure,
            dead_letter=dead_letter,
            max_in_flight=max_in_flight,
            max_in_flight_per_partition=max_in_flight_per_partition,
            key_ordering=key_ordering,
            params=params,
            revoke_grace_seconds=revoke_grace_seconds,
            notifiers=(*self.notifiers, *notifiers),
            controls=built,
            expect_every=expect,
        )
        check_declarations([*self.subscriptions, subscription])
        self.subscriptions.append(subscription)
        return subscription

    def run(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully.

        This process is a worker: it also sets the interpreter up for one (see
        `tune_worker_process`), which `serve()` leaves to its embedder.
        """
        tune_worker_process()
        asyncio.run(self._run_with_signals())

    async def _run_with_signals(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            await self.serve(stop)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)

    async def serve(self, stop: asyncio.Event | None = None) -> None:
        """Run until `stop` is set (forever without one), then shut down gracefully.

        Shutdown: stop fetching, let runs in flight finish within the grace
        period (`EVENTFLOW_SHUTDOWN_GRACE`, default 30 s; the rest are cancelled
        and end CRASHED), flush the store, commit offsets, leave the groups.
        """
        settings = self.settings or Settings.from_env()
        configure_logging(settings.log_format, settings.log_level)
        keep_results(settings.persist_results, settings.result_max_bytes)
        stop = stop or asyncio.Event()
        await anyio.to_thread.run_sync(upgrade, settings.database_url)
        writer = RunWriter(
            settings.database_url,
            flush_interval=settings.flush_interval,
            process=settings.writer_process,
        )
        await anyio.to_thread.run_sync(writer.start)
        store = SqlRunStore.open(settings.database_url)
        self.worker_id = worker_id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        started_at = time.time()
        worker_row = {
            "id": worker_id,
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": started_at,
            "heartbeat_at": started_at,
            "stopped_at": None,
        }
        self.lease = lease = WorkerLease(worker_row, store, writer)
        await lease.register()
        self.runners = [
            SubscriptionRunner(
                s,
                writer,
                store,
                lease,
                health=SubscriptionHealth(
                    s.name,
                    stall_after=settings.stall_seconds,
                    unhealthy_after=settings.health_stall_seconds,
                ),
            )
            for s in self.subscriptions
        ]
        rejoin = Rejoin(lease, self.runners, lambda: self._shutting_down)
        loop = asyncio.get_running_loop()

        def refused(fences: list[Fence]) -> None:  # on the writer's thread
            loop.call_soon_threadsafe(rejoin.refused, fences)

        writer.fences.on_refused = refused
        house = Housekeeping(
            self.runners,
            writer=writer,
            store=store,
            worker_id=worker_id,
            settings=settings,
            health=self.health,
            notifiers=self._notifiers,
        )
        house.report_sweep(await store.sweep_crashed(settings.worker_lease, worker_id))
        self.lineage = lineage = LineageLoop(
            self.runners,
            store.engine,
            interval=settings.lineage_interval,
            notifiers=self._notifiers,
        )
        await lineage.declare()
        self._shutting_down = False
        logger.info("worker %s started: %d subscription(s)", worker_id, len(self.runners))
        exporter = MetricsExporter()
        exporter.relays = relays = Relays(store.engine, worker_id)
        if settings.metrics_port and multiprocess_dir() is None:
            exporter.serve(settings.metrics_host, settings.metrics_port, health=self.health.read)
        try:
            # the background loops live as long as the runs; the sources end first.
            # Each runner's runs are tasks of its own group (`SubscriptionRunner.group`),
            # opened here around the sources: they outlive the sources, not the drain.
            async with anyio.create_task_group() as background, contextlib.AsyncExitStack() as runs:
                for runner in self.runners:
                    await runs.enter_async_context(runner.group)
                loops: list[Callable[[], Awaitable[None]]] = [
                    partial(house.heartbeat, lease),
                    partial(house.watch_clock, rejoin.frozen),
                    rejoin.run,
                    house.sweep,
                    house.live_status if sys.stderr.isatty() else house.report,
                    partial(house.publish, exporter),
                    house.claim_replays,
                    partial(lineage.run, exporter),
                ]
                loops.append(relays.run)
                if settings.retention is not None:
                    loops.append(partial(house.retain, settings.retention))
                loops += [partial(commit_loop, r, settings.commit_interval) for r in self.runners]
                for each in loops:
                    background.start_soon(_logged, each)
                try:
                    await self._serve_sources(stop)
                finally:
                    await self._drain(settings.shutdown_grace)
                    background.cancel_scope.cancel()
        finally:
            writer.fences.on_refused = None
            await self._shut_down(settings, house, lease, exporter)
            await store.close()
            self.started.clear()
            logger.info("worker %s stopped", worker_id)

    async def _serve_sources(self, stop: asyncio.Event) -> None:
        """Run every subscription's source until `stop`; then they get 10 s to return."""
        async with anyio.create_task_group() as sources:
            for runner in self.runners:
                sources.start_soon(supervise_source, runner, lambda: self._shutting_down)
            self.started.set()
            try:
                await stop.wait()
                logger.info("worker %s shutting down", self.worker_id)
            finally:
                self._shutting_down = True
                for runner in self.runners:
                    runner.stop_fetching()
                sources.cancel_scope.deadline = anyio.current_time() + 10

    async def _drain(self, grace: float) -> None:
        """Every subscription gets the whole grace period for its runs, at the same time."""
        with anyio.CancelScope(shield=True):
            cancelled = sum(await asyncio.gather(*(r.drain(grace) for r in self.runners)))
        if cancelled:
            logger.warning("cancelled %d runs still in flight after the grace period", cancelled)

    async def _shut_down(
        self,
        settings: Settings,
        house: Housekeeping,
        lease: WorkerLease,
        exporter: MetricsExporter,
    ) -> None:
        """The last commits and records, each bounded: a store or broker away must not hold it."""
        writer = house.writer
        for runner in self.runners:
            runner.health.shut_down()
            for step, seconds in (
                (runner.commit, settings.shutdown_grace),
                (runner.source.close, 30.0),
                (runner.stop_sink, 30.0),
            ):
                with anyio.move_on_after(seconds), contextlib.suppress(Exception):
                    await step()
        house.put_source_status()
        lease.put_stopped()
        try:
            await asyncio.wait_for(writer.flush(), settings.shutdown_grace)
        except TimeoutError:
            logger.error(
                "the run store did not take the last records within %.0fs; their events"
                " run again after a restart (their offsets were not committed)",
                settings.shutdown_grace,
            )
        exporter.sync(self.runners, writer)
        exporter.close()
        for notifier in self._notifiers():
            await anyio.to_thread.run_sync(notifier.close)
        await anyio.to_thread.run_sync(writer.close)

    def _notifiers(self, flow_name: str | None = None) -> list[Notifier]:
        """The subscriptions' notifiers (of `flow_name`'s only), each once."""
        found = {
            id(n): n
            for sub in self.subscriptions
            if flow_name is None or sub.flow.name == flow_name
            for n in sub.notifiers
        }
        return list(found.values())


async def _logged(loop: Callable[[], Awaitable[None]]) -> None:
    """Run a background loop; one that fails is logged, and the worker goes on without it."""
    try:
        await loop()
    except Exception:
        logger.exception("a background task of the worker failed")
