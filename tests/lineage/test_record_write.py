"""The hook a sink calls on publish: the flow run's flow writes the dataset, in the store."""

from __future__ import annotations

import asyncio

from connectors.kafka import KafkaSink
from eventflow import flow
from eventflow._datasets import RECORDED
from eventflow._runtime._lineage_loop import LineageLoop
from eventflow._store import _lineage as store
from eventflow._store._engine import make_engine
from eventflow.runtime import record_write
from tests._kafka import Kafka


@flow(name="publisher")
def publisher() -> None:
    record_write("kafka:published")
    record_write("kafka:published")  # once is enough
    record_write("not a dataset")  # a sink's odd topic is no error, and no edge


async def test_a_write_recorded_in_a_run_becomes_an_edge(any_default_store: str) -> None:
    RECORDED.forget()
    record_write("kafka:outside")  # outside a flow run: nothing
    await asyncio.to_thread(publisher)
    engine = make_engine(any_default_store)
    try:
        loop = LineageLoop([], engine, interval=1.0, notifiers=list)
        await loop.evaluate()
        graph = await store.load(engine)
    finally:
        await engine.dispose()
    assert [(e.flow, e.dataset, e.direction) for e in graph.edges] == [
        ("publisher", "kafka:published", "writes")
    ]
    assert graph.datasets["kafka:published"].last_at is not None  # the run completed: a write
    assert RECORDED.take() == []


async def test_a_flow_publishing_through_a_kafka_sink_writes_its_topic(
    any_default_store: str, kafka: Kafka
) -> None:
    """Issue 24: publishing through `KafkaSink` (exactly once or `send`) records the topic as
    written, with nothing declared."""
    once = KafkaSink("lineage-once", bootstrap_servers=kafka.bootstrap)
    plain = KafkaSink("lineage-plain", bootstrap_servers=kafka.bootstrap)

    @flow(name="sink-publisher")
    async def sink_publisher() -> None:
        once.publish(b"{}", key=b"k")
        await plain.send(b"{}", key=b"k")

    RECORDED.forget()
    try:
        await sink_publisher()
    finally:
        await plain.stop()
    engine = make_engine(any_default_store)
    try:
        await LineageLoop([], engine, interval=1.0, notifiers=list).evaluate()
        graph = await store.load(engine)
    finally:
        await engine.dispose()
    assert sorted((e.flow, e.dataset, e.direction) for e in graph.edges) == [
        ("sink-publisher", "kafka:lineage-once", "writes"),
        ("sink-publisher", "kafka:lineage-plain", "writes"),
    ]
