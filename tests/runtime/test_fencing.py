"""A worker that loses its claims mid-stream drops that work, says so once, and rejoins:
real broker, real stores. (Frozen processes and network partitions between hosts:
tests/distributed/.)"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter

import pytest

from connectors.kafka import KafkaSource
from eventflow import App, Settings, flow, task
from eventflow._store import _schema as schema
from eventflow._store._runstore import SqlRunStore
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests._store import flow_runs, rows

pytestmark = pytest.mark.kafka

EVENTS = 300


def settings(url: str) -> Settings:
    return Settings(database_url=url, flush_interval=0.02, commit_interval=0.2, worker_lease=3)


async def serving(app: App) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task_ = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    return stop, task_


def worker_app(
    database_url: str, topic: str, group: str, bootstrap: str
) -> tuple[App, Counter[int]]:
    charged: Counter[int] = Counter()

    @task
    async def charge(n: int) -> int:
        await asyncio.sleep(0.02)
        charged[n] += 1
        return n

    @flow(name=f"fenced-{group}")
    async def process(n: int) -> int:
        return await charge(n)

    app = App(settings(database_url))
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=6000),
        process,
        max_in_flight=64,
    )
    return app, charged


async def completed_once(database_url: str, flow_name: str) -> bool:
    runs = await flow_runs(database_url, flow_name=flow_name, state_type="COMPLETED")
    per_event = Counter((r["event_partition"], r["event_offset"]) for r in runs)
    return len(per_event) == EVENTS


async def check_contract(database_url: str, flow_name: str) -> None:
    runs = await flow_runs(database_url, flow_name=flow_name)
    completed = Counter(
        (r["event_partition"], r["event_offset"]) for r in runs if r["state_type"] == "COMPLETED"
    )
    assert len(completed) == EVENTS
    assert max(completed.values()) == 1, "an event has two COMPLETED runs"
    assert not [r for r in runs if r["state_type"] in ("RUNNING", "PENDING", "RETRYING")]


async def watch_offsets(database_url: str, moved_back: list[str], stop: asyncio.Event) -> None:
    """Poll the stored offsets the whole time: one that moves backwards is recorded."""
    last: dict[tuple[str, int], int] = {}
    while not stop.is_set():
        for row in await rows(database_url, schema.consumer_offsets):
            key = (row["topic"], row["partition"])
            if row["next_offset"] < last.get(key, 0):
                moved_back.append(f"{key}: {last[key]} -> {row['next_offset']}")
            last[key] = max(last.get(key, 0), row["next_offset"])
        await asyncio.sleep(0.05)


async def test_a_worker_whose_partitions_were_claimed_by_another_drops_them_and_rejoins(
    kafka: Kafka, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = f"fence-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=4)
    app, charged = worker_app(database_url, topic, group, kafka.bootstrap)
    flow_name = f"fenced-{group}"
    stop, serve = await serving(app)
    watching, moved_back = asyncio.Event(), []
    watcher = asyncio.create_task(watch_offsets(database_url, moved_back, watching))
    store = SqlRunStore.open(database_url)
    try:
        await produce(
            kafka.bootstrap, topic, [(f"k{i % 20}", b'{"n": %d}' % i) for i in range(EVENTS)]
        )
        await wait_until(lambda: sum(charged.values()) >= EVENTS // 3, timeout=60)
        runner = app.runners[0]
        # another worker claims every partition this one holds (as after a rebalance
        # this one did not notice: a freeze, a partition from the broker)
        held = list(runner.fences.by_partition)
        _, ended = await store.claim_partitions(flow_name, group, held, "intruder")
        await wait_until(lambda: sum(runner.stats.fenced.values()) >= 1, timeout=30)
        assert runner.stats.fenced == {"partition_claimed": len(held)}
        await wait_until(lambda: completed_once(database_url, flow_name), timeout=120)
        await check_contract(database_url, flow_name)
    finally:
        watching.set()
        await watcher
        stop.set()
        await asyncio.wait_for(serve, 120)
        await store.close()
    assert moved_back == []
    fenced = [r for r in caplog.records if "fenced out of" in r.getMessage()]
    assert len(fenced) == 1 and fenced[0].levelno == logging.WARNING
    assert "claimed by intruder" in fenced[0].getMessage()
    assert not [r for r in caplog.records if "interrupted" in r.getMessage()]
    assert all(p in fenced[0].getMessage() for p in (f"{topic}[0]", f"{topic}[3]"))
    # what was in flight when it lost them was ended by the claim, never completed by it
    crashed = {
        r["id"]
        for r in await flow_runs(database_url, flow_name=flow_name)
        if r["state_type"] == "CRASHED"
    }
    assert {run.run_id for run in ended} <= crashed


async def test_a_worker_declared_dead_while_alive_claims_its_lease_again_and_rejoins(
    kafka: Kafka, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    topic, group = f"lease-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    app, charged = worker_app(database_url, topic, group, kafka.bootstrap)
    flow_name = f"fenced-{group}"
    stop, serve = await serving(app)
    store = SqlRunStore.open(database_url)
    try:
        await produce(
            kafka.bootstrap, topic, [(f"k{i % 20}", b'{"n": %d}' % i) for i in range(EVENTS)]
        )
        await wait_until(lambda: sum(charged.values()) >= EVENTS // 3, timeout=60)
        assert app.lease is not None
        old = app.lease.fence
        # another worker's sweep declares this one dead (as if its heartbeat had lapsed)
        sweep = await store.sweep_crashed(-60.0, alive="another-worker")
        assert sweep.workers == [app.worker_id]
        await wait_until(
            lambda: app.lease is not None and app.lease.fence.epoch > old.epoch, timeout=30
        )
        await wait_until(lambda: completed_once(database_url, flow_name), timeout=120)
        await check_contract(database_url, flow_name)
    finally:
        stop.set()
        await asyncio.wait_for(serve, 120)
        await store.close()
    assert old.lost
    assert app.runners[0].stats.fenced == {"lease_lost": 1}
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and "fenced" in r.getMessage()
    ]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"worker {app.worker_id} fenced (lease taken over: another")
    # runs cancelled because their claim was lost are not logged one by one
    assert not [r for r in caplog.records if "interrupted" in r.getMessage()]
    (worker,) = await rows(database_url, schema.workers)
    assert worker["stopped_at"] is not None  # it stopped at the end, cleanly
