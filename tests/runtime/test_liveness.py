"""A worker never goes quiet: stray cancellations, hanging commits, and the health probes.

Real broker, real store; the worker runs in this process (`App.serve`) where a
test must reach into it (to inject a fault), and as an `eventflow run` process
where the probe endpoint is what is tested.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.kafka import KafkaSource
from eventflow import App, flow
from eventflow._runtime._liveness import Outage, RepeatFilter, SubscriptionHealth
from eventflow._runtime._source import Event, EventSink, Source
from eventflow._store import _schema as schema
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests._services import free_port
from tests._store import flow_runs, rows
from tests.runtime._workers import Worker
from tests.runtime.test_kafka_crashes import _at_least, _kafka_committed, worker_env
from tests.runtime.test_kafka_delivery import orders, serving, settings

pytestmark = pytest.mark.kafka


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


@flow(name="liveness-echo")
async def echo(id: str, customer_id: str, amount: int, seq: int = 0) -> str:
    return id


async def new_topic(bootstrap: str, partitions: int = 2) -> tuple[str, str]:
    topic, group = f"live-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, partitions)
    return topic, group


async def completed(url: str, count: int) -> bool:
    return len(await flow_runs(url, state_type="COMPLETED")) >= count


# -- a source ended by a CancelledError that is not a shutdown -------------------------


class _CancelledOnce(Source):
    """Raises CancelledError on its first run (as aiokafka did), then delivers its events."""

    name = "cancelled-once"

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.runs = 0

    async def run(self, sink: EventSink) -> None:
        self.runs += 1
        if self.runs == 1:
            raise asyncio.CancelledError  # nobody cancelled the task: a library did this
        await sink.deliver(self.events)
        await asyncio.Event().wait()  # until shutdown cancels it


async def test_a_source_ended_by_a_stray_cancellation_is_logged_and_restarted(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    events = [
        Event(f"e{i}", b'{"id": "o%d", "customer_id": "c", "amount": 1}' % i) for i in range(3)
    ]
    source = _CancelledOnce(events)
    app = App(settings(sqlite_url))
    app.subscribe(source, echo)
    caplog.set_level(logging.INFO, logger="eventflow")
    stop, serve = await serving(app)
    try:
        await wait_until(lambda: completed(sqlite_url, 3), timeout=30)
    finally:
        stop.set()
        await serve
    assert source.runs == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert any("a CancelledError not from shutdown" in r.getMessage() for r in errors), errors


async def test_aiokafka_coordination_cancelled_under_the_consumer_is_survived(
    kafka: Kafka, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The failure seen in the field: aiokafka's coordination task ends by cancellation,
    after which every getmany re-raises that CancelledError."""
    topic, group = await new_topic(kafka.bootstrap)
    source = KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=group)
    app = App(settings(sqlite_url))
    app.subscribe(source, echo)
    caplog.set_level(logging.INFO, logger="eventflow")
    stop, serve = await serving(app)
    try:
        await produce(kafka.bootstrap, topic, orders(100, keys=10))
        await wait_until(lambda: completed(sqlite_url, 100), timeout=60)
        consumer = source._consumer
        assert consumer is not None
        consumer._coordinator._coordination_task.cancel()
        await wait_until(lambda: source._consumer is not consumer, timeout=30)
        await produce(kafka.bootstrap, topic, orders(200, keys=10)[100:])
        await wait_until(lambda: completed(sqlite_url, 200), timeout=90)
    finally:
        stop.set()
        await serve
    assert any(
        "group coordination ended" in r.getMessage() and r.levelno == logging.ERROR
        for r in caplog.records
    )
    runs = await flow_runs(sqlite_url)
    assert len({(r["event_partition"], r["event_offset"]) for r in runs}) == 200 == len(runs)


# -- a broker that hangs ------------------------------------------------------------------


async def test_a_hanging_broker_does_not_block_the_commit_loop(sqlite_url: str) -> None:
    """SIGSTOP: the broker's sockets stay open and answer nothing. Runs finish meanwhile;
    their offsets reach the store; the broker gets them once it answers again."""
    broker = Kafka.start_new()  # its own broker: stopping it must not hang the other tests
    stopped = False
    try:
        topic, group = await new_topic(broker.bootstrap, partitions=2)
        gate = asyncio.Event()

        @flow(name="liveness-gated")
        async def gated(id: str, customer_id: str, amount: int, seq: int = 0) -> str:
            await gate.wait()
            return id

        source = KafkaSource(
            topic, bootstrap_servers=broker.bootstrap, group_id=group, commit_timeout_s=2
        )
        app = App(settings(sqlite_url))
        app.subscribe(source, gated)
        stop, serve = await serving(app)
        try:
            await produce(broker.bootstrap, topic, orders(50, keys=10))
            await wait_until(lambda: app.runners[0].in_flight == 50, timeout=60)
            broker.signal(signal.SIGSTOP)
            stopped = True
            gate.set()  # the runs finish while the broker hangs
            await wait_until(lambda: completed(sqlite_url, 50), timeout=30)
            ends = {0: 0, 1: 0}
            for run in await flow_runs(sqlite_url):
                partition = run["event_partition"]
                ends[partition] = max(ends[partition], run["event_offset"] + 1)

            async def stored() -> dict[int, int]:
                offsets = await rows(sqlite_url, schema.consumer_offsets)
                return {o["partition"]: o["next_offset"] for o in offsets}

            # the commit loop goes on although every broker commit hangs
            await wait_until(lambda: _equal(stored(), ends), timeout=20)
            broker.signal(signal.SIGCONT)
            stopped = False
            await wait_until(
                lambda: _equal(_kafka_committed(broker, topic, group, 2), ends), timeout=60
            )
        finally:
            if stopped:
                broker.signal(signal.SIGCONT)
            stop.set()
            await asyncio.wait_for(serve, 120)
    finally:
        await asyncio.to_thread(broker.stop)


async def _equal(value: Any, expected: Any) -> bool:
    try:
        return bool(await value == expected)
    except Exception:  # the broker is coming back
        return False


# -- probes -------------------------------------------------------------------------------


async def _probe(port: int, path: str) -> int | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code
    except httpx.HTTPError:
        return None


async def _metric(port: int, name: str) -> float | None:
    async with httpx.AsyncClient(timeout=5) as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.slow(25)
async def test_the_liveness_probe_fails_while_nothing_is_consumed_and_events_wait(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    topic, group = await new_topic(kafka.bootstrap, partitions=2)
    port, gate = free_port(), tmp_path / "gate"
    env = worker_env(
        kafka,
        sqlite_url,
        topic,
        group,
        MAX_IN_FLIGHT="10",
        GATE=str(gate),
        EVENTFLOW_METRICS_PORT=str(port),
        EVENTFLOW_STALL_SECONDS="2",
        EVENTFLOW_HEALTH_STALL_SECONDS="6",
    )
    worker = Worker(env, tmp_path / "worker.log")
    await produce(kafka.bootstrap, topic, orders(200, keys=20))
    # healthy while consuming
    await wait_until(lambda: _at_least(sqlite_url, 1), timeout=60)
    assert await _probe(port, "/livez") == 200
    await wait_until(lambda: _is(_probe(port, "/readyz"), 200), timeout=30)

    gate.touch()  # the runs in flight cannot finish: the bound is reached, events wait
    await produce(kafka.bootstrap, topic, orders(10_000, keys=20)[200:])
    await wait_until(lambda: _is(_metric(port, "eventflow_source_up"), 0.0), timeout=30)
    assert await _probe(port, "/readyz") == 503  # stalled: not ready ...
    await wait_until(lambda: _is(_probe(port, "/livez"), 503), timeout=30)  # ... then not alive
    assert await _probe(port, "/healthz") == 503
    status = await wait_until(lambda: _status(sqlite_url, "stalled"), timeout=30)
    assert status["lag"] > 0

    gate.unlink()  # it moves again
    await wait_until(lambda: _is(_probe(port, "/livez"), 200), timeout=30)
    await wait_until(lambda: _at_least(sqlite_url, 10_000), timeout=120)
    await wait_until(lambda: _is(_probe(port, "/readyz"), 200), timeout=30)
    await wait_until(lambda: _status(sqlite_url, "running"), timeout=30)
    assert worker.terminate() == 0


async def _is(value: Any, expected: Any) -> bool:
    try:
        return bool(await value == expected)
    except Exception:
        return False


async def _status(url: str, state: str) -> dict[str, Any] | None:
    for row in await rows(url, schema.source_status):
        if row["state"] == state:
            return row
    return None


# -- the pieces, alone --------------------------------------------------------------------


def test_an_outage_logs_once_then_a_summary_then_once_when_it_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="eventflow")
    outage = Outage("broker", summary_every=30)
    for second in range(61):  # a failed attempt ten times a second for a minute
        for tenth in range(10):
            outage.failed("connection refused", now=1000 + second + tenth / 10)
        outage.tick(now=1000 + second + 0.95)
    outage.recovered(now=1061)
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 4, messages  # lost, still lost at 30 s and 60 s, back
    assert "retrying" in messages[0] and "still failing after 31s" in messages[1]
    assert messages[-1] == "broker: back after 61s (610 failed attempts)"


def test_a_repeat_filter_lets_one_record_of_a_kind_through_per_window() -> None:
    repeat = RepeatFilter(window=60)

    def record(message: str, *args: Any) -> logging.LogRecord:
        return logging.LogRecord("aiokafka.conn", logging.ERROR, __file__, 1, message, args, None)

    passed = [repeat.filter(record("Unable connect to node %s: %s", 1, i)) for i in range(1000)]
    assert passed.count(True) == 1
    assert repeat.filter(record("another kind")) is True


def test_stalled_only_while_events_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("eventflow._runtime._liveness.time.monotonic", lambda: clock[0])
    health = SubscriptionHealth("s", stall_after=5, unhealthy_after=20)
    update = {"received": 10, "finished": 10, "source_failing": False, "stopping": False}
    assert health.update(lag=0, **update) == "running"
    clock[0] += 60  # idle, but nothing waits: an idle topic is not a stall
    assert health.update(lag=0, **update) == "running"
    assert health.update(lag=5, **update) == "running"
    clock[0] += 6
    assert health.update(lag=5, **update) == "stalled"
    assert health.verdict().alive
    clock[0] += 15
    assert not health.verdict().alive
    assert health.update(lag=4, **{**update, "finished": 11}) == "running"  # progress
    assert health.verdict().alive
    assert health.update(lag=4, **{**update, "source_failing": True}) == "reconnecting"


def test_a_store_outage_is_not_a_stall(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("eventflow._runtime._liveness.time.monotonic", lambda: clock[0])
    health = SubscriptionHealth("s", stall_after=5, unhealthy_after=20)
    update = {"received": 10, "finished": 10, "source_failing": False, "stopping": False}
    assert health.update(lag=5, **update) == "running"
    for _ in range(10):  # five minutes without the store: consumption paused on purpose
        clock[0] += 30
        assert health.update(lag=5, store_up=False, **update) == "running"
    assert health.verdict().alive


def test_events_arriving_end_a_source_outage_it_never_ended_itself(sqlite_url: str) -> None:
    """A third-party source that records errors but never calls record_ok."""

    class Silent(Source):
        name = "silent"

        async def run(self, sink: EventSink) -> None:
            await asyncio.Event().wait()

    source = Silent()
    source.record_error("HTTP 503")
    health = SubscriptionHealth("s", stall_after=5, unhealthy_after=20)
    update = {"finished": 0, "lag": 0, "stopping": False}
    assert health.update(received=0, source_failing=source.failing, **update) == "reconnecting"
    assert health.update(received=3, source_failing=source.failing, **update) == "reconnecting"
    assert health.received_moved  # what App._check_health takes as the source being back
