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
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import orjson

from .._errors import EventflowError
from .._flows import Flow
from .._logging import STATUS_LINE, configure_logging
from .._metrics import MetricsExporter, multiprocess_dir
from .._notify import Notification
from .._results import configure as keep_results
from .._retries import Backoff
from .._settings import Settings
from .._store._engine import make_engine
from .._store._leases import acquire_lease
from .._store._migrate import upgrade
from .._store._recovery import Sweep, sweep_crashed
from .._store._replay import claim_replays
from .._store._retention import prune
from .._store._writer import RunWriter
from ._checks import check_subscription
from ._controls import Controls, KeyFunction, SingletonMode
from ._liveness import Outage, SubscriptionHealth, WorkerHealth
from ._source import Event, Sink, Source
from ._subscription import (
    SOURCE_CALL_TIMEOUT,
    FailurePolicy,
    Notifier,
    Subscription,
    SubscriptionRunner,
)

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
        concurrency: int | None = None,
        concurrency_key: KeyFunction | None = None,
        rate_limit: str | None = None,
        rate_limit_key: KeyFunction | None = None,
        idempotency_key: KeyFunction | None = None,
        idempotency_window: timedelta | float = timedelta(hours=24),
        priority: KeyFunction | None = None,
        debounce: timedelta | float | None = None,
        debounce_key: KeyFunction | None = None,
        batch_size: int | None = None,
        batch_timeout: timedelta | float = 1.0,
        singleton_key: KeyFunction | None = None,
        singleton_mode: SingletonMode = "skip",
        cancel_on: KeyFunction | None = None,
        cancel_key: KeyFunction | None = None,
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
        """
        on_failure = check_subscription(
            source,
            flow,
            on_failure=on_failure,
            dead_letter=dead_letter,
            params=params,
            batch_size=batch_size,
        )
        if on_failure not in ("dead_letter", "skip", "stop"):
            raise ValueError(
                f"on_failure must be 'dead_letter', 'skip' or 'stop', not {on_failure!r}"
            )
        if max_in_flight < 1 or max_in_flight_per_partition < 1:
            raise ValueError("in-flight bounds must be >= 1")
        controls = Controls.build(
            concurrency=concurrency,
            concurrency_key=concurrency_key,
            rate_limit=rate_limit,
            rate_limit_key=rate_limit_key,
            idempotency_key=idempotency_key,
            idempotency_window=idempotency_window,
            priority=priority,
            debounce=debounce,
            debounce_key=debounce_key,
            batch_size=batch_size,
            batch_timeout=batch_timeout,
            singleton_key=singleton_key,
            singleton_mode=singleton_mode,
            cancel_on=cancel_on,
            cancel_key=cancel_key,
        )
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
            controls=controls,
        )
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
        await asyncio.to_thread(upgrade, settings.database_url)
        writer = RunWriter(
            settings.database_url,
            flush_interval=settings.flush_interval,
            process=settings.writer_process,
        )
        await asyncio.to_thread(writer.start)
        engine = make_engine(settings.database_url)
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
        writer.put_worker(worker_row)
        await writer.flush()
        sweep = await sweep_crashed(engine, settings.worker_lease, worker_id)
        self._report_sweep(sweep)
        self._shutting_down = False
        self.runners = [
            SubscriptionRunner(
                s,
                writer,
                engine,
                worker_id,
                health=SubscriptionHealth(
                    s.name,
                    stall_after=settings.stall_seconds,
                    unhealthy_after=settings.health_stall_seconds,
                ),
            )
            for s in self.subscriptions
        ]
        logger.info("worker %s started: %d subscription(s)", worker_id, len(self.runners))
        exporter = MetricsExporter()
        if settings.metrics_port and multiprocess_dir() is None:
            exporter.serve(settings.metrics_host, settings.metrics_port, health=self.health.read)
        background: list[asyncio.Task[None]] = []
        sources: list[asyncio.Task[None]] = []
        try:
            background.append(asyncio.create_task(self._heartbeat(writer, worker_row, settings)))
            background.append(asyncio.create_task(self._sweep(engine, writer, worker_id, settings)))
            if sys.stderr.isatty():
                background.append(asyncio.create_task(self._live_status(writer)))
            else:
                background.append(asyncio.create_task(self._report(writer)))
            background.append(asyncio.create_task(self._publish(exporter, writer)))
            background.append(asyncio.create_task(self._claim_replays(engine)))
            if settings.retention is not None:
                background.append(asyncio.create_task(self._retain(engine, settings.retention)))
            for runner in self.runners:
                sources.append(asyncio.create_task(self._supervise_source(runner)))
                background.append(asyncio.create_task(self._commit_loop(runner, settings)))
            self.started.set()
            await stop.wait()
            logger.info("worker %s shutting down", worker_id)
        finally:
            self._shutting_down = True
            for runner in self.runners:
                runner.stop_fetching()
            if sources:
                _done, pending = await asyncio.wait(sources, timeout=10)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*sources, return_exceptions=True)
            # every subscription gets the whole grace period, at the same time
            cancelled = sum(
                await asyncio.gather(*(r.drain(settings.shutdown_grace) for r in self.runners))
            )
            if cancelled:
                logger.warning(
                    "cancelled %d runs still in flight after the grace period", cancelled
                )
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            for runner in self.runners:
                runner.health.shut_down()
                # bounded: a store or broker that is away must not hold the shutdown
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runner.commit(), settings.shutdown_grace)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runner.source.close(), 30)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(runner.stop_sink(), 30)
            self._put_source_status(writer)
            writer.put_worker(
                {**worker_row, "heartbeat_at": time.time(), "stopped_at": time.time()}
            )
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
                await asyncio.to_thread(notifier.close)
            await asyncio.to_thread(writer.close)
            await engine.dispose()
            self.started.clear()
            logger.info("worker %s stopped", worker_id)

    async def _supervise_source(self, runner: SubscriptionRunner) -> None:
        """Run a source until shutdown; whatever else ends it is logged and restarted.

        Only the app's own shutdown ends a source: `runner.stopping` says so, or
        this task's own cancellation (`cancelling()`). A CancelledError that a
        library raises while nobody cancelled us, an exception, or a source that
        simply returns is a failure: logged at ERROR (with a traceback unless it is
        an eventflow error, whose message says it all; the same failure again only
        counts in the source's outage summary) and restarted with backoff.
        """
        name = runner.subscription.name
        backoff = Backoff(initial=0.5, maximum=10.0, jitter=0.2)
        failures = 0
        previous = ""
        while not runner.stopping:
            started = time.monotonic()
            runner.health.source_started()
            try:
                await runner.source.run(runner)
                if runner.stopping:
                    return
                if runner.source.finite:
                    logger.info("%s: the source delivered everything it has", name)
                    runner.health.shut_down()
                    return
                error: BaseException = SourceEndedError(f"{name}: the source's run() returned")
            except asyncio.CancelledError as cancelled:
                task = asyncio.current_task()
                if runner.stopping or self._shutting_down or (task and task.cancelling()):
                    raise
                error = cancelled
            except Exception as failure:
                error = failure
            runner.health.source_failed()
            if time.monotonic() - started > 60:
                failures, previous = 0, ""  # it ran a good while: a new failure
            failures += 1
            delay = backoff.delay(failures)
            if isinstance(error, asyncio.CancelledError):
                described = "a CancelledError not from shutdown"
            else:
                described = f"{type(error).__name__}: {error}"
            runner.source.record_error(described)
            if described != previous:
                # eventflow's own errors (a connector translated its library's) say it
                # all; anything else gets its traceback
                logger.error(
                    "%s: source ended (%s); restarting in %.1fs",
                    name,
                    described,
                    delay,
                    exc_info=None if isinstance(error, EventflowError) else error,
                )
            # the same failure again only counts in the source's outage summary
            previous = described
            await asyncio.sleep(delay)

    async def _commit_loop(self, runner: SubscriptionRunner, settings: Settings) -> None:
        """Store offsets and commit them to the source, every `commit_interval`.

        Each round is bounded: while the store is away a round gives up after
        60 s (the offsets wait in the writer's queue) and the next one tries again.
        (Longer than the source's own commit bound, SOURCE_CALL_TIMEOUT, so a broker
        that hangs is seen and logged there, not cut off silently here.)
        """
        while True:
            await asyncio.sleep(settings.commit_interval)
            try:
                await asyncio.wait_for(runner.commit(), 2 * SOURCE_CALL_TIMEOUT)
            except TimeoutError:
                continue  # the store is away: the writer logs it, the next round retries
            except Exception:
                logger.exception("%s: commit failed", runner.subscription.name)

    async def _report(self, writer: RunWriter, every: float = 15.0) -> None:
        """A status line per subscription in the worker's log, while there is news."""
        last: list[tuple[int, int, str, bool]] = [(-1, -1, "", True)] * len(self.runners)
        while True:
            await asyncio.sleep(every)
            for i, runner in enumerate(self.runners):
                stats = runner.stats
                now = (stats.received, runner.in_flight, runner.health.state, writer.healthy)
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
                    "healthy" if writer.healthy else "UNAVAILABLE",
                    writer.pending,
                )

    async def _live_status(self, writer: RunWriter, every: float = 1.0) -> None:
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
                store = "store ok" if writer.healthy else "STORE UNAVAILABLE"
                STATUS_LINE.show(f"{' | '.join(parts)} | {store}")
        finally:
            STATUS_LINE.close()

    async def _publish(self, exporter: MetricsExporter, writer: RunWriter) -> None:
        """Every second: liveness and metrics; the subscriptions' states into the store every 5."""
        tick = 0
        store_outage = Outage("run store")
        while True:
            await asyncio.sleep(1.0)
            try:
                self._check_health(writer, store_outage)
                exporter.sync(self.runners, writer, self.health.read())
                tick += 1
                if tick % 5 == 0:
                    self._put_source_status(writer)
            except Exception:  # never let a metrics bug stop the metrics for good
                logger.exception("exporting metrics failed")

    def _check_health(self, writer: RunWriter, store_outage: Outage) -> None:
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
                store_up=writer.healthy,
                now=now,
            )
            if source.failing and runner.health.received_moved:
                # events arrive: whatever failed works again (for a source that
                # records its errors but never says when it recovered)
                source.record_ok()
            source.outage.tick(now)
            for outage in runner.outages:
                outage.tick(now)
            verdicts.append(runner.health.verdict(now))
        store_outage.watch(not writer.healthy, writer.last_error, now)
        self.health.publish(verdicts, store_up=writer.healthy, now=now)

    def _put_source_status(self, writer: RunWriter) -> None:
        now = time.time()
        for runner in self.runners:
            stats, source, health = runner.stats, runner.source, runner.health
            lag = source.lag()
            writer.put_source_status(
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
                    "store_up": writer.healthy,
                    "partitions": _partitions_json(runner, lag),
                }
            )

    async def _claim_replays(self, engine: Any, every: float = 1.0) -> None:
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
                if runner.accepting()
            }
            flows = [name for name, free in room.items() if free > 0]
            try:
                claimed = await claim_replays(
                    engine, flows, self.worker_id or "", limit=min([100, *(room[f] for f in flows)])
                )
            except Exception as error:  # the store is away: quietly, it is logged already
                outage.failed(f"{type(error).__name__}: {error}")
                outage.tick()
                continue
            outage.recovered()
            for row in claimed:
                logger.info("replaying flow run %s as %s", row["retry_of"], row["id"])
                by_flow[row["flow_name"]].start_replay(row)

    async def _retain(self, engine: Any, retention: float) -> None:
        """Delete runs older than `retention`; one worker of the app at a time does it."""
        every = min(3600.0, max(1.0, retention / 4))
        while True:
            await asyncio.sleep(every)
            try:
                if not await acquire_lease(
                    engine, "eventflow:retention", self.worker_id or "", every * 2
                ):
                    continue
                deleted = await prune(engine, time.time() - retention)
            except Exception as error:
                logger.warning("retention: pruning old runs failed: %s", error)
                continue
            if deleted:
                logger.info("retention: deleted %d runs older than %.0fs", deleted, retention)

    async def _heartbeat(self, writer: RunWriter, row: dict[str, Any], settings: Settings) -> None:
        while True:
            await asyncio.sleep(settings.worker_lease / 5)
            writer.put_worker({**row, "heartbeat_at": time.time()})

    async def _sweep(
        self, engine: Any, writer: RunWriter, worker_id: str, settings: Settings
    ) -> None:
        """Mark the runs of dead workers CRASHED, from time to time.

        Only after the store has been healthy for a whole lease: during an
        outage nobody's heartbeat is written, and every worker looks dead.
        """
        while True:
            await asyncio.sleep(settings.worker_lease / 2)
            if not writer.healthy or time.time() - writer.healthy_since < settings.worker_lease:
                continue
            try:
                sweep = await sweep_crashed(engine, settings.worker_lease, worker_id)
            except Exception as error:
                logger.warning("crash sweep failed: %s", error)
                continue
            self._report_sweep(sweep)

    def _report_sweep(self, sweep: Sweep) -> None:
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
            for notifier in self._notifiers(run.flow_name):
                notifier.notify(notification)

    def _notifiers(self, flow_name: str | None = None) -> list[Notifier]:
        """The subscriptions' notifiers (of `flow_name`'s only), each once."""
        found = {
            id(n): n
            for sub in self.subscriptions
            if flow_name is None or sub.flow.name == flow_name
            for n in sub.notifiers
        }
        return list(found.values())


class SourceEndedError(EventflowError):
    """A source's `run()` returned while the worker was not shutting down."""


def _partitions_json(runner: SubscriptionRunner, lag: Mapping[tuple[str, int], int]) -> str | None:
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
