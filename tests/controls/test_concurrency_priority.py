"""`concurrency`, `concurrency_key` and `priority` against a real broker and both stores."""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pydantic

from eventflow import App, flow
from eventflow.testing import TestApp
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.controls._harness import committed, control_logs, memory_topic, send_all, settings


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    priority: int = 0


async def test_concurrency_per_key_holds_back_one_key_without_blocking_others(
    database_url: str,
) -> None:
    source, group = memory_topic("conc")
    release_a = asyncio.Event()
    running: dict[str, int] = defaultdict(int)
    most: dict[str, int] = defaultdict(int)
    started: list[str] = []

    @flow(name="conc-orders")
    async def handle(order: Order) -> str:
        started.append(order.id)
        running[order.customer_id] += 1
        most[order.customer_id] = max(most[order.customer_id], running[order.customer_id])
        try:
            if order.customer_id == "a":
                await release_a.wait()
            return order.id
        finally:
            running[order.customer_id] -= 1

    # a0 b0 a1 b1 a2 a3 ... a9: offsets 0..11 of one partition
    documents = [{"id": f"a{i}", "customer_id": "a"} for i in range(10)]
    documents[1:1] = [{"id": "b0", "customer_id": "b"}]
    documents[3:3] = [{"id": "b1", "customer_id": "b"}]
    app = App(settings(database_url))
    app.subscribe(source, handle, concurrency=2, concurrency_key="customer_id")
    async with TestApp(app, database_url=database_url) as test:
        send_all(test, source, documents)
        runner = test.worker.runners[0]
        await wait_until(lambda: runner.stats.waiting["concurrency"] == 8, timeout=60)
        # customer b is not held behind a's waiting events
        await wait_until(lambda: runner.stats.completed == 2, timeout=30)
        assert running["a"] == 2 and runner.in_flight == 10
        await runner.commit()
        assert await committed(database_url, group) == 0  # a0 (offset 0) has not finished
        await runner.writer.flush()
        pending = await flow_runs(database_url, state_type="PENDING")
        assert len(pending) == 8
        assert {r["state_name"] for r in pending} == {"AwaitingConcurrency"}
        release_a.set()
        await wait_until(lambda: runner.stats.completed == 12, timeout=60)
    runs = await flow_runs(database_url)
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED"] * 12
    assert most["a"] == 2 and most["b"] <= 2
    assert [i for i in started if i.startswith("a")] == [f"a{i}" for i in range(10)]
    assert await committed(database_url, group) == 12
    assert runner.stats.decisions == {("concurrency", "admitted"): 4, ("concurrency", "waited"): 8}
    assert runner.stats.waiting["concurrency"] == 0
    messages = [log["message"] for log in await control_logs(database_url)]
    assert sum(m.startswith("waiting: a concurrency slot of key 'a'") for m in messages) == 8
    assert sum(m.startswith("started after waiting") for m in messages) == 8


async def test_higher_priority_waiting_events_start_first(database_url: str) -> None:
    source, group = memory_topic("prio")
    first_may_end = asyncio.Event()
    started: list[str] = []

    @flow(name="prio-orders")
    async def handle(order: Order) -> str:
        started.append(order.id)
        if order.id == "e0":
            await first_may_end.wait()
        return order.id

    priorities = [0, 1, 5, 3, 5, 0, 9, 3]
    app = App(settings(database_url))
    app.subscribe(source, handle, concurrency=1, priority="priority")
    async with TestApp(app, database_url=database_url) as test:
        send_all(
            test,
            source,
            [{"id": f"e{i}", "customer_id": "c", "priority": p} for i, p in enumerate(priorities)],
        )
        runner = test.worker.runners[0]
        await wait_until(lambda: runner.stats.waiting["concurrency"] == 7, timeout=60)
        assert started == ["e0"]
        first_may_end.set()
        await wait_until(lambda: runner.stats.completed == 8, timeout=60)
    # highest priority first, ties in arrival order
    assert started == ["e0", "e6", "e2", "e4", "e3", "e7", "e1", "e5"]
    assert await committed(database_url, group) == 8
