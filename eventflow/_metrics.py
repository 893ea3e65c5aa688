"""Prometheus metrics: tallied cheaply where things happen, exported once a second.

The engine finishes tens of thousands of runs a second; a prometheus-client
update per run (a lock, and in multi-process mode an mmap write) would cost
more than the rest of the bookkeeping. So the engine only bumps plain dict
counters and histogram buckets in `RECORDER`, and a worker's exporter
(`MetricsExporter.sync`, called every second and at shutdown) moves the deltas
into prometheus-client objects, served at `/metrics`.

With `eventflow run --workers N` the supervisor sets PROMETHEUS_MULTIPROC_DIR
before starting the workers: prometheus-client then keeps every worker's values
in files there, and the supervisor alone serves them summed (`serve_multiprocess`).
"""

from __future__ import annotations

import logging
import threading
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from . import _probe_server
from ._states import SOURCE_STATES

if TYPE_CHECKING:
    from ._lineage import Graph
    from ._runtime._relay import Relays, RelayStats
    from ._runtime._runner import SubscriptionRunner
    from ._store._writer import RunWriter

logger = logging.getLogger("eventflow.metrics")

DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0
)  # fmt: skip
BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000)


@dataclass(slots=True)
class _Tally:
    """Counts and histogram buckets by label values, swapped out whole by the exporter."""

    counts: dict[tuple[str, ...], int] = field(default_factory=dict)
    histograms: dict[tuple[str, ...], list[float]] = field(default_factory=dict)


class RunRecorder:
    """Where the engine reports finished runs and retries; costs a dict update each."""

    def __init__(self) -> None:
        self._tally = _Tally()

    def run_finished(self, kind: str, name: str, state: str, seconds: float | None) -> None:
        """A flow run (`kind="flow"`) or task run (`"task"`) reached a final state."""
        tally = self._tally
        key = (kind, name, state)
        tally.counts[key] = tally.counts.get(key, 0) + 1
        if seconds is not None:
            hist_key = (kind, name)
            buckets = tally.histograms.get(hist_key)
            if buckets is None:
                buckets = tally.histograms[hist_key] = [0.0] * (len(DURATION_BUCKETS) + 2)
            buckets[bisect_left(DURATION_BUCKETS, seconds)] += 1  # the last-but-one is +Inf
            buckets[-1] += seconds

    def retried(self, kind: str, name: str) -> None:
        tally = self._tally
        key = (kind, name, "retry")
        tally.counts[key] = tally.counts.get(key, 0) + 1

    def take(self) -> _Tally:
        """Everything tallied since the last call (an attribute swap: atomic under the GIL)."""
        tally, self._tally = self._tally, _Tally()
        return tally


RECORDER = RunRecorder()


class _Metrics:
    """The prometheus-client objects, created once per process (they register globally)."""

    def __init__(self) -> None:
        self.flow_runs = Counter(
            "eventflow_flow_runs_total", "Flow runs that reached a final state.", ["flow", "state"]
        )
        self.task_runs = Counter(
            "eventflow_task_runs_total", "Task runs that reached a final state.", ["task", "state"]
        )
        self.retries = Counter(
            "eventflow_retries_total", "Retries of flow runs and task runs.", ["kind", "name"]
        )
        self.flow_duration = Histogram(
            "eventflow_flow_run_duration_seconds",
            "Flow run duration, start to final state.",
            ["flow"],
            buckets=DURATION_BUCKETS,
        )
        self.task_duration = Histogram(
            "eventflow_task_run_duration_seconds",
            "Task run duration, first attempt to final state.",
            ["task"],
            buckets=DURATION_BUCKETS,
        )
        self.events_received = Counter(
            "eventflow_events_received_total", "Events a source delivered.", ["subscription"]
        )
        self.events_decoded = Counter(
            "eventflow_events_decoded_total",
            "Events whose payload validated into the flow's parameters.",
            ["subscription"],
        )
        self.events_invalid = Counter(
            "eventflow_events_invalid_total",
            "Poison events: undecodable or failing validation.",
            ["subscription"],
        )
        self.events_duplicate = Counter(
            "eventflow_events_duplicate_total",
            "Redelivered events whose run had already ended (not run again).",
            ["subscription"],
        )
        self.dead_lettered = Counter(
            "eventflow_events_dead_lettered_total",
            "Events sent to the dead-letter destination.",
            ["subscription"],
        )
        self.source_errors = Counter(
            "eventflow_source_errors_total",
            "Errors fetching from a source (it backs off and goes on).",
            ["subscription"],
        )
        self.in_flight = Gauge(
            "eventflow_runs_in_flight",
            "Events taken and not yet finished (running or waiting for their key).",
            ["subscription"],
            multiprocess_mode="livesum",
        )
        self.events_waiting = Gauge(
            "eventflow_events_waiting",
            "Events held back by a flow control (concurrency, rate_limit, idempotency,"
            " debounce, batch).",
            ["subscription", "control"],
            multiprocess_mode="livesum",
        )
        self.control_decisions = Counter(
            "eventflow_control_decisions_total",
            "What flow controls decided for events: admitted, waited, throttled, duplicate...",
            ["subscription", "control", "decision"],
        )
        self.fenced = Counter(
            "eventflow_fenced_total",
            "Claims a worker lost, with their work: partition_claimed (its partitions were"
            " claimed by another worker), lease_lost (it was declared dead while alive),"
            " frozen (it stood still longer than its lease).",
            ["subscription", "reason"],
        )
        self.lag = Gauge(
            "eventflow_consumer_lag",
            "Messages behind the end of the partition, per assigned partition.",
            ["subscription", "topic", "partition"],
            multiprocess_mode="livesum",
        )
        self.store_write = Histogram(
            "eventflow_store_write_seconds",
            "Duration of one group commit to the run store.",
            buckets=DURATION_BUCKETS,
        )
        self.store_batch = Histogram(
            "eventflow_store_batch_records",
            "Records written per group commit.",
            buckets=BATCH_BUCKETS,
        )
        self.store_queued = Gauge(
            "eventflow_store_queued_records",
            "Records waiting for the next group commit.",
            multiprocess_mode="livesum",
        )
        self.store_up = Gauge(
            "eventflow_store_up",
            "1 while the run store accepts writes, 0 while it is unreachable.",
            multiprocess_mode="livemin",
        )
        self.source_up = Gauge(
            "eventflow_source_up",
            "1 while the subscription's source is running, 0 while it is reconnecting,"
            " stalled or stopped.",
            ["subscription"],
            multiprocess_mode="livemin",
        )
        self.source_state = Gauge(
            "eventflow_source_state",
            "1 for the subscription's current state (running, reconnecting, stalled,"
            " stopped), 0 for the others.",
            ["subscription", "state"],
            multiprocess_mode="livemax",
        )
        self.source_stalled = Gauge(
            "eventflow_source_stalled_seconds",
            "Seconds since the subscription last consumed an event or finished a run,"
            " while events wait (lag > 0); 0 when nothing waits.",
            ["subscription"],
            multiprocess_mode="livemax",
        )
        self.outbox_pending = Gauge(
            "eventflow_outbox_pending",
            "Messages flows published (KafkaSink.publish) that wait in the outbox, per"
            " destination (kafka:<topic>).",
            ["destination"],
            multiprocess_mode="livemax",
        )
        self.outbox_oldest = Gauge(
            "eventflow_outbox_oldest_pending_seconds",
            "Age of the oldest message waiting in the outbox; 0 when none waits.",
            ["destination"],
            multiprocess_mode="livemax",
        )
        self.outbox_published = Counter(
            "eventflow_outbox_published_total",
            "Messages this worker's relay published from the outbox.",
            ["destination"],
        )
        self.outbox_failing = Gauge(
            "eventflow_outbox_failing",
            "1 while the destination's relay cannot publish (broker down, topic missing...).",
            ["destination"],
            multiprocess_mode="livemax",
        )
        self.dataset_age = Gauge(
            "eventflow_dataset_age_seconds",
            "Seconds since a dataset's last event or write (lineage; absent before the first).",
            ["dataset"],
            multiprocess_mode="livemin",
        )
        self.dataset_late = Gauge(
            "eventflow_dataset_late",
            "1 while a dataset missed its freshness expectation, else 0.",
            ["dataset"],
            multiprocess_mode="livemax",
        )
        self.worker_alive = Gauge(
            "eventflow_worker_alive",
            "1 while the worker needs no restart (what /livez answers), else 0.",
            multiprocess_mode="livemin",
        )
        self.worker_ready = Gauge(
            "eventflow_worker_ready",
            "1 while every subscription runs and the store is up (what /readyz answers).",
            multiprocess_mode="livemin",
        )


_metrics: _Metrics | None = None
_metrics_lock = threading.Lock()


def _get_metrics() -> _Metrics:
    global _metrics
    with _metrics_lock:
        if _metrics is None:
            _metrics = _Metrics()
        return _metrics


def _add_buckets(histogram: Any, buckets: list[float]) -> None:
    """Add pre-bucketed observations to a histogram child.

    prometheus-client has no bulk `observe`; its children keep one value per
    bucket (not cumulative, +Inf last) and a sum, which is what is added here.
    tests/test_metrics.py checks the exported buckets, should that change.
    """
    for i, count in enumerate(buckets[:-1]):
        if count:
            histogram._buckets[i].inc(count)
    histogram._sum.inc(buckets[-1])


@dataclass(slots=True)
class _SubscriptionTotals:
    received: int = 0
    decoded: int = 0
    invalid: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    source_errors: int = 0
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    fenced: dict[str, int] = field(default_factory=dict)
    lag_partitions: set[tuple[str, int]] = field(default_factory=set)


class MetricsExporter:
    """Moves a worker's tallies into prometheus-client and serves `/metrics`."""

    def __init__(self) -> None:
        self.metrics = _get_metrics()
        self._seen: dict[str, _SubscriptionTotals] = {}
        self.relays: Relays | None = None
        """The worker's outbox relays (eventflow/_runtime/_relay.py)."""
        self._published: dict[str, int] = {}
        self._server: Any = None
        # a label-less gauge exists, at 0, from its creation: a worker just started
        # (its store reached, nothing wrong yet) must not pull the workers' minimum
        # down before its first sync
        self.metrics.store_up.set(1)
        self.metrics.worker_alive.set(1)

    def serve(self, host: str, port: int, health: _probe_server.HealthCheck) -> bool:
        """Serve `/metrics` and the probes (`/livez`, `/readyz`, `/healthz`) from a thread.

        False if the port is taken.
        """
        try:
            self._server = _probe_server.serve(host, port, health)
        except OSError as error:
            logger.warning("metrics not served on %s:%d: %s", host, port, error)
            return False
        logger.info("metrics at http://%s:%d/metrics, probes at /livez and /readyz", host, port)
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def sync(
        self,
        runners: Iterable[SubscriptionRunner],
        writer: RunWriter | None,
        health: Mapping[str, Any] | None = None,
    ) -> None:
        """Export everything counted since the last call (and the worker's `health`)."""
        m = self.metrics
        tally = RECORDER.take()
        for (kind, name, state), count in tally.counts.items():
            if state == "retry":
                m.retries.labels(kind, name).inc(count)
            elif kind == "flow":
                m.flow_runs.labels(name, state).inc(count)
            else:
                m.task_runs.labels(name, state).inc(count)
        for (kind, name), buckets in tally.histograms.items():
            histogram = m.flow_duration if kind == "flow" else m.task_duration
            _add_buckets(histogram.labels(name), buckets)
        for runner in runners:
            self._sync_runner(runner)
        if writer is not None:
            self._sync_writer(writer)
        if self.relays is not None:
            for relay in self.relays.all:
                self._sync_relay(relay.stats)
        if health is not None:
            m.worker_alive.set(1 if health["alive"] else 0)
            m.worker_ready.set(1 if health["ready"] else 0)

    def sync_datasets(self, graph: Graph, now: float) -> None:
        """The datasets' ages and late flags (labels: the declared datasets, a bounded set)."""
        m = self.metrics
        for dataset in graph.datasets.values():
            age = dataset.age(now)
            if age is not None:
                m.dataset_age.labels(dataset.name).set(age)
            m.dataset_late.labels(dataset.name).set(1 if dataset.late(now) else 0)

    def _sync_runner(self, runner: SubscriptionRunner) -> None:
        m = self.metrics
        name = runner.subscription.name
        seen = self._seen.setdefault(name, _SubscriptionTotals())
        stats = runner.stats
        source = runner.source
        for counter, now, attr in (
            (m.events_received, stats.received, "received"),
            (m.events_decoded, stats.received - stats.invalid, "decoded"),
            (m.events_invalid, stats.invalid, "invalid"),
            (m.events_duplicate, stats.skipped_duplicates, "duplicates"),
            (m.dead_lettered, stats.dead_lettered, "dead_lettered"),
            (m.source_errors, source.health.errors, "source_errors"),
        ):
            delta = now - getattr(seen, attr)
            if delta > 0:
                counter.labels(name).inc(delta)
                setattr(seen, attr, now)
        m.in_flight.labels(name).set(runner.in_flight)
        if runner.subscription.controls is not None:
            for control, waiting in stats.waiting.items():
                m.events_waiting.labels(name, control).set(waiting)
            for (control, decision), count in list(stats.decisions.items()):
                delta = count - seen.decisions.get((control, decision), 0)
                if delta > 0:
                    m.control_decisions.labels(name, control, decision).inc(delta)
                    seen.decisions[(control, decision)] = count
        for reason, count in list(stats.fenced.items()):
            delta = count - seen.fenced.get(reason, 0)
            if delta > 0:
                m.fenced.labels(name, reason).inc(delta)
                seen.fenced[reason] = count
        state = runner.health.state
        m.source_up.labels(name).set(1 if state == "running" else 0)
        for each in SOURCE_STATES:
            m.source_state.labels(name, each).set(1 if each == state else 0)
        m.source_stalled.labels(name).set(round(runner.health.stalled_seconds(), 1))
        lag: Mapping[tuple[str, int], int] = source.lag()
        for topic, partition in seen.lag_partitions - set(lag):
            m.lag.labels(name, topic, str(partition)).set(0)  # no longer ours
        for (topic, partition), behind in lag.items():
            m.lag.labels(name, topic, str(partition)).set(behind)
        seen.lag_partitions = set(lag)

    def _sync_relay(self, stats: RelayStats) -> None:
        m = self.metrics
        name = stats.destination
        m.outbox_pending.labels(name).set(stats.pending)
        m.outbox_oldest.labels(name).set(round(stats.oldest_age(), 3))
        m.outbox_failing.labels(name).set(1 if stats.state == "failing" else 0)
        delta = stats.published - self._published.get(name, 0)
        if delta > 0:
            m.outbox_published.labels(name).inc(delta)
            self._published[name] = stats.published

    def _sync_writer(self, writer: RunWriter) -> None:
        m = self.metrics
        for seconds, records in writer.take_batch_timings():
            m.store_write.observe(seconds)
            m.store_batch.observe(records)
        m.store_queued.set(writer.pending)
        m.store_up.set(1 if writer.healthy else 0)
