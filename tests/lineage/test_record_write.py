"""The hook a sink calls on publish: the flow run's flow writes the dataset, in the store."""

from __future__ import annotations

import asyncio

from eventflow import flow
from eventflow._datasets import RECORDED
from eventflow._runtime._lineage_loop import LineageLoop
from eventflow._store import _lineage as store
from eventflow._store._engine import make_engine
from eventflow.runtime import record_write


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
