"""Every Kafka event becomes exactly one tracked run, against a real broker."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import orjson
import pydantic
import pytest

from connectors.kafka import KafkaSource
from eventflow import App, Settings, flow, task
from eventflow._store import _schema as schema
from tests._kafka import Kafka, consume_all, create_topic, produce, wait_until
from tests._store import flow_runs, rows

pytestmark = pytest.mark.kafka


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int
    seq: int = 0


def settings(url: str) -> Settings:
    return Settings(database_url=url, flush_interval=0.02, commit_interval=0.2, worker_lease=3)


async def serving(app: App) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task_ = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    return stop, task_


def orders(count: int, keys: int) -> list[tuple[str, bytes]]:
    messages = []
    seq: dict[str, int] = defaultdict(int)
    for i in range(count):
        customer = f"c{i % keys}"
        seq[customer] += 1
        order = {"id": f"o{i}", "customer_id": customer, "amount": i % 100, "seq": seq[customer]}
        messages.append((customer, orjson.dumps(order)))
    return messages


async def test_every_event_is_exactly_one_completed_run_in_key_order(
    kafka: Kafka, database_url: str
) -> None:
    topic, group = f"orders-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=4)
    seen: dict[str, list[int]] = defaultdict(list)

    @task(retries=2)
    async def enrich(order: Order) -> dict[str, Any]:
        await asyncio.sleep(0.001 * (order.seq % 3))  # interleave keys
        return {"customer": order.customer_id}

    @task
    def record(order: Order, customer: dict[str, Any]) -> int:
        seen[order.customer_id].append(order.seq)
        return order.amount

    @flow(name="kafka-orders")
    async def process(order: Order) -> int:
        customer = await enrich(order)
        return await record.submit(order, customer)

    app = App(settings(database_url))
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=group),
        process,
        max_in_flight=200,
        max_in_flight_per_partition=64,
    )
    messages = orders(3000, keys=50)
    stop, serve = await serving(app)
    await produce(kafka.bootstrap, topic, messages)

    async def all_done() -> bool:
        return len(await flow_runs(database_url, state_type="COMPLETED")) >= 3000

    await wait_until(all_done, timeout=120, interval=0.5)
    stop.set()
    await serve

    runs = await flow_runs(database_url)
    assert len(runs) == 3000
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    positions = {(r["event_partition"], r["event_offset"]) for r in runs}
    assert len(positions) == 3000  # one run per event
    assert sum(len(v) for v in seen.values()) == 3000
    for customer, sequence in seen.items():
        assert sequence == sorted(sequence), f"{customer} ran out of order"
    offsets = await rows(database_url, schema.consumer_offsets)
    assert sum(o["next_offset"] for o in offsets) == 3000  # everything committed in the store
    assert len(await rows(database_url, schema.task_runs)) == 6000


async def test_poison_and_failed_events_go_to_the_dead_letter_topic(
    kafka: Kafka, sqlite_url: str
) -> None:
    topic, group = f"mixed-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    attempts: dict[str, int] = defaultdict(int)

    @flow(name="picky", retries=2, retry_delay_seconds=0.01)
    async def picky(order: Order) -> str:
        attempts[order.id] += 1
        if order.amount == 13:
            raise ValueError(f"unlucky order {order.id}")
        return order.id

    app = App(settings(sqlite_url))
    app.subscribe(KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=group), picky)
    good = [
        (f"k{i}", orjson.dumps({"id": f"g{i}", "customer_id": "c", "amount": 1})) for i in range(20)
    ]
    poison = [
        ("p1", b"\xff\xfe not json"),
        ("p2", b'{"id": "x", "customer_id": "c"}'),  # amount missing
        ("p3", b'{"id": "y", "customer_id": "c", "amount": "lots"}'),
        ("p4", orjson.dumps({"id": "unlucky", "customer_id": "c", "amount": 13})),
    ]
    stop, serve = await serving(app)
    await produce(kafka.bootstrap, topic, good[:10] + poison + good[10:])

    dead = await consume_all(kafka.bootstrap, f"{topic}.dlq", expected=4, timeout=60)
    await wait_until(lambda: app.runners[0].stats.completed >= 20, timeout=60)
    stop.set()
    await serve

    assert sorted(r.key for r in dead) == [b"p1", b"p2", b"p3", b"p4"]
    for record in dead:
        headers = dict(record.headers)
        assert headers["eventflow-original-topic"] == topic.encode()
        assert int(headers["eventflow-original-offset"]) >= 0
        assert headers["eventflow-flow"] == b"picky"
        run_id = headers["eventflow-flow-run-id"].decode()
        (run,) = await flow_runs(sqlite_url, id=run_id)
        assert run["state_type"] == "FAILED"
        assert headers["eventflow-error"].decode() == run["error"]
    by_key = {r.key: dict(r.headers)["eventflow-error"].decode() for r in dead}
    assert "Invalid JSON" in by_key[b"p1"]
    assert "amount" in by_key[b"p2"] and "amount" in by_key[b"p3"]
    assert by_key[b"p4"] == "ValueError: unlucky order unlucky"
    assert attempts["unlucky"] == 3  # retries were spent before dead-lettering
    runs = await flow_runs(sqlite_url)
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED"] * 20 + ["FAILED"] * 4
    offsets = await rows(sqlite_url, schema.consumer_offsets)
    assert sum(o["next_offset"] for o in offsets) == 24  # the stream went on past them


async def test_a_new_consumer_group_runs_the_events_another_group_already_ran(
    kafka: Kafka, sqlite_url: str
) -> None:
    """Reprocessing a topic under a new group id: redeliveries are recognised per group."""
    topic = f"regroup-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    await produce(kafka.bootstrap, topic, orders(200, keys=10))

    @flow(name="regroup")
    def handle(order: Order) -> str:
        return order.id

    for group in ("first", "second"):
        app = App(settings(sqlite_url))
        app.subscribe(
            KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=f"{group}-{topic}"),
            handle,
        )
        stop, serve = await serving(app)

        async def group_done(group: str = group) -> bool:
            done = await flow_runs(
                sqlite_url, state_type="COMPLETED", event_group=f"{group}-{topic}"
            )
            return len(done) >= 200

        await wait_until(group_done, timeout=60, interval=0.2)
        stop.set()
        await serve

    runs = await flow_runs(sqlite_url)
    assert len(runs) == 400 and {r["state_type"] for r in runs} == {"COMPLETED"}
    for group in ("first", "second"):
        positions = {
            (r["event_partition"], r["event_offset"])
            for r in runs
            if r["event_group"] == f"{group}-{topic}"
        }
        assert len(positions) == 200  # every event once per group
