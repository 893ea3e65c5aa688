"""Publishing from flows exactly once (KafkaSink.publish): real broker, both stores."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

import orjson
import pydantic
import pytest
from aiokafka import AIOKafkaProducer

from connectors.kafka import KafkaSink, KafkaSource
from eventflow import App, flow, task
from eventflow._runtime._relay import Relay
from eventflow._store import _schema as schema
from eventflow._store._engine import make_engine
from eventflow._store._migrate import upgrade
from eventflow.runtime import MESSAGE_ID_HEADER, PublishError
from tests._kafka import Kafka, consume_to_end, create_topic, produce, wait_until
from tests._store import flow_runs, rows
from tests.runtime.test_kafka_delivery import orders, serving, settings

pytestmark = pytest.mark.kafka


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int
    seq: int = 0


def published(records: Iterable[Any]) -> list[dict[str, Any]]:
    """The output records as dicts, with their message id and partition."""
    found = []
    for record in records:
        headers = dict(record.headers)
        found.append(
            {
                **orjson.loads(record.value),
                "message_id": headers.get(MESSAGE_ID_HEADER, b"").decode(),
                "partition": record.partition,
                "offset": record.offset,
                "key": record.key,
            }
        )
    return found


def assert_exactly_once_in_key_order(
    messages: list[dict[str, Any]], expected: set[tuple[str, int]]
) -> None:
    """Each (order id, n) in `expected` once and nothing else; per key, (seq, n) ascending."""
    seen = Counter((m["id"], m["n"]) for m in messages)
    doubles = {k: c for k, c in seen.items() if c > 1}
    assert doubles == {}, f"{len(doubles)} published twice, e.g. {list(doubles)[:5]}"
    assert set(seen) - expected == set(), "published for runs that did not complete"
    assert expected - set(seen) == set(), "completed runs whose messages are missing"
    ids = [m["message_id"] for m in messages]
    assert all(ids) and len(set(ids)) == len(ids)
    by_key: dict[Any, list[tuple[int, int]]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: (m["partition"], m["offset"])):
        by_key[m["key"]].append((m["seq"], m["n"]))
    for key, sequence in by_key.items():
        assert sequence == sorted(sequence), f"key {key!r} out of order"


async def test_messages_are_published_once_their_run_completed(
    kafka: Kafka, database_url: str
) -> None:
    topic, out_topic = f"in-{uuid.uuid4().hex[:8]}", f"out-{uuid.uuid4().hex[:8]}"
    group = f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=3)
    await create_topic(kafka.bootstrap, out_topic, partitions=3)
    out = KafkaSink(out_topic, bootstrap_servers=kafka.bootstrap)
    attempts: Counter[str] = Counter()

    def message(order: Order, n: int) -> bytes:
        return orjson.dumps({"id": order.id, "seq": order.seq, "n": n})

    @task
    def validate(order: Order) -> int:  # a sync task: publish needs no event loop
        out.publish(message(order, 0), key=order.customer_id.encode())
        return order.amount

    @flow(name="publisher", retries=1, retry_delay_seconds=0)
    async def publisher(order: Order) -> int:
        attempts[order.id] += 1
        amount = await validate.submit(order)
        out.publish(message(order, 1), key=order.customer_id.encode(), headers=[("h", b"v")])
        number = int(order.id[1:])
        if number % 10 == 3 and attempts[order.id] == 1:
            raise RuntimeError("fails once: its retry publishes, the failed attempt does not")
        if number % 10 == 7:
            raise RuntimeError("always fails: publishes nothing")
        return amount

    app = App(settings(database_url))
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=group),
        publisher,
        on_failure="skip",
    )
    total = 200
    stop, serve = await serving(app)
    await produce(kafka.bootstrap, topic, orders(total, keys=7))

    async def all_published() -> bool:
        outbox = await rows(database_url, schema.outbox)
        return len(outbox) >= 2 * 180 and all(r["published_at"] for r in outbox)

    await wait_until(all_published, timeout=90, interval=0.3)
    stop.set()
    await serve

    runs = await flow_runs(database_url)
    completed = {
        orjson.loads(r["event_payload"])["id"] for r in runs if r["state_type"] == "COMPLETED"
    }
    assert len(completed) == 180
    messages = published(await consume_to_end(kafka.bootstrap, out_topic))
    assert_exactly_once_in_key_order(messages, {(i, n) for i in completed for n in (0, 1)})
    task_runs = await rows(database_url, schema.task_runs)
    assert all(t["result"] is None for t in task_runs)  # a task that published keeps no result


async def test_publish_outside_a_run_and_too_large_messages_are_refused(
    kafka: Kafka, sqlite_url: str, default_store: str
) -> None:
    sink = KafkaSink(f"out-{uuid.uuid4().hex[:8]}", bootstrap_servers=kafka.bootstrap,
                     max_message_bytes=1000)  # fmt: skip
    with pytest.raises(PublishError, match="outside a flow run"):
        sink.publish(b"x")

    @flow(name="too-large")
    def too_large() -> None:
        sink.publish(b"x" * 2000)

    with pytest.raises(PublishError, match=r"over the sink's max_message_bytes \(1000\)"):
        await asyncio.to_thread(too_large)


async def _relay_setup(
    kafka: Kafka, url: str, count: int
) -> tuple[KafkaSink, Any, list[dict[str, Any]]]:
    """A store with `count` messages waiting for a new topic, and its engine."""
    out_topic = f"out-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, out_topic, partitions=2)
    sink = KafkaSink(out_topic, bootstrap_servers=kafka.bootstrap)
    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    waiting = [
        {
            "message_id": f"m{i}",
            "destination": sink.dataset,
            "flow_run_id": "r",
            "key": f"k{i % 3}".encode(),
            "value": orjson.dumps({"id": f"o{i}", "seq": i, "n": 0}),
            "headers": None,
            "created_at": time.time(),
        }
        for i in range(count)
    ]
    async with engine.begin() as conn:
        await conn.execute(schema.outbox.insert(), waiting)
    return sink, engine, waiting


async def test_a_batch_the_topic_took_before_a_crash_is_not_sent_again(
    kafka: Kafka, database_url: str
) -> None:
    """The relay dies between the Kafka commit and the store's mark: the next one reads
    the batch number the transaction committed, marks the batch, sends the rest once."""
    sink, engine, waiting = await _relay_setup(kafka, database_url, 30)
    relay = Relay(sink.dataset, sink._transport, engine, "worker-a")
    relay.batch_size, relay.idle_exit = 10, 0.2
    marks: list[int] = []

    async def killed_after_the_first_commit(token: tuple[str, int], attempt: int) -> None:
        if attempt > 0:
            marks.append(attempt)
            raise RuntimeError("killed between the Kafka commit and the store's mark")

    relay._mark = killed_after_the_first_commit  # type: ignore[method-assign]
    await relay.run_once()
    assert relay.stats.state == "failing" and marks == [1]
    outbox = await rows(database_url, schema.outbox)
    assert sum(1 for r in outbox if r["attempt"] == 1 and r["published_at"] is None) == 10

    successor = Relay(sink.dataset, sink._transport, engine, "worker-a")
    successor.batch_size, successor.idle_exit = 10, 0.2
    await successor.run_once()
    assert successor.stats.published == 20  # the first batch was marked, not sent again
    try:
        messages = published(await consume_to_end(kafka.bootstrap, sink.topic))
        assert_exactly_once_in_key_order(messages, {(f"o{i}", 0) for i in range(len(waiting))})
        assert all(r["published_at"] for r in await rows(database_url, schema.outbox))
    finally:
        await engine.dispose()


async def test_a_copy_of_a_message_is_not_run_again_by_its_id(
    kafka: Kafka, sqlite_url: str
) -> None:
    """A relay's batch aborted, then sent again: read_committed (the default) never sees
    the aborted copy; a subscription reading uncommitted data drops it by its
    eventflow-message-id (`idempotency_key="eventflow-message-id"`, per consumer group)."""
    topic = f"copies-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, transactional_id=topic)
    await producer.start()
    try:
        for commit in (False, True):
            await producer.begin_transaction()
            for i in range(3):
                value = orjson.dumps({"id": f"o{i}", "customer_id": "c", "amount": i})
                headers = [(MESSAGE_ID_HEADER, f"m{i}".encode())]
                await producer.send_and_wait(topic, value, key=b"c", headers=headers)
            if commit:
                await producer.commit_transaction()
            else:
                await producer.abort_transaction()
    finally:
        await producer.stop()

    ran: dict[str, list[str]] = defaultdict(list)

    def consumer(name: str) -> Any:
        @flow(name=name)
        def run(order: Order) -> None:
            ran[name].append(order.id)

        return run

    app = App(settings(sqlite_url))
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=f"{topic}-committed"),
        consumer("committed"),
    )
    app.subscribe(
        KafkaSource(
            topic,
            bootstrap_servers=kafka.bootstrap,
            group_id=f"{topic}-uncommitted",
            isolation_level="read_uncommitted",
        ),
        consumer("uncommitted"),
        idempotency_key="eventflow-message-id",
    )
    stop, serve = await serving(app)

    async def all_read() -> bool:
        return len(await flow_runs(sqlite_url)) >= 9

    await wait_until(all_read, timeout=60, interval=0.2)
    stop.set()
    await serve
    assert sorted(ran["committed"]) == ["o0", "o1", "o2"]
    assert sorted(ran["uncommitted"]) == ["o0", "o1", "o2"]
    runs = await flow_runs(sqlite_url, flow_name="uncommitted")
    assert sorted(r["state_name"] for r in runs) == ["Completed"] * 3 + ["Duplicate"] * 3
