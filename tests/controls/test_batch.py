"""`batch_size`: a flow of a list gets up to N events per run; offsets wait for the batch run."""

from __future__ import annotations

import asyncio
from collections import Counter

import pydantic

from connectors.kafka import KafkaSource
from eventflow import App, flow
from eventflow.testing import TestApp
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.controls._harness import committed, control_logs, memory_topic, send_all, settings


class Reading(pydantic.BaseModel):
    id: str
    value: int


async def test_batches_of_n_then_the_rest_after_the_timeout(database_url: str) -> None:
    source, group = memory_topic("batch")
    sizes: list[int] = []
    last_may_end = asyncio.Event()

    @flow(name="batched-readings")
    async def store_readings(readings: list[Reading]) -> int:
        sizes.append(len(readings))
        if len(readings) < 5:
            await last_may_end.wait()
        return sum(r.value for r in readings)

    app = App(settings(database_url))
    app.subscribe(source, store_readings, batch_size=5, batch_timeout=1.0)
    async with TestApp(app, database_url=database_url) as test:
        send_all(test, source, [{"id": f"r{i}", "value": i} for i in range(12)])
        runner = test.worker.runners[0]
        await wait_until(lambda: sizes == [5, 5, 2], timeout=60)
        await wait_until(lambda: runner.stats.completed == 10, timeout=30)
        await runner.commit()
        assert await committed(database_url, group) == 10  # the last batch is still running
        assert runner.in_flight == 2
        last_may_end.set()
        await wait_until(lambda: runner.stats.completed == 12, timeout=30)
    assert runner.stats.decisions == {("batch", "runs"): 3, ("batch", "events"): 12}
    assert await committed(database_url, group) == 12
    runs = await flow_runs(database_url)
    batch_runs = {r["id"]: r for r in runs if r["event_id"] is None}
    assert sorted(int(r["result"]) for r in batch_runs.values()) == [10, 21, 35]
    members = [r for r in runs if r["event_id"] is not None]
    assert {(r["state_type"], r["state_name"]) for r in members} == {("COMPLETED", "Batched")}
    assert sorted(r["event_offset"] for r in members) == list(range(12))
    assert Counter(r["linked_run_id"] for r in members) == {
        run_id: {"10": 5, "35": 5, "21": 2}[run["result"]] for run_id, run in batch_runs.items()
    }
    logs = await control_logs(database_url)
    assert sorted(log["flow_run_id"] for log in logs) == sorted(batch_runs)


async def test_a_new_consumer_group_batches_the_events_another_group_batched(
    database_url: str,
) -> None:
    """Reprocessing under a new group id: the events' "Batched" records belong to the
    group that read them, so the second group's runner does not take them as done."""
    first, first_group = memory_topic("regroup-batch")
    second = KafkaSource(*first.topics, bootstrap_servers="127.0.0.1:1", group_id="second")
    batches: list[int] = []

    @flow(name="regrouped-readings")
    async def store_readings(readings: list[Reading]) -> int:
        batches.append(len(readings))
        return len(readings)

    for source in (first, second):
        app = App(settings(database_url))
        app.subscribe(source, store_readings, batch_size=5, batch_timeout=0.2)
        async with TestApp(app, database_url=database_url) as test:
            send_all(test, source, [{"id": f"r{i}", "value": i} for i in range(10)])
            stats = test.worker.runners[0].stats
            await wait_until(lambda s=stats: s.completed == 10, timeout=30)  # type: ignore[misc]
    assert batches == [5, 5, 5, 5]  # both groups ran every event
    members = [r for r in await flow_runs(database_url) if r["event_id"] is not None]
    assert Counter(r["event_group"] for r in members) == {first_group: 10, "second": 10}
