"""The lineage tables on SQLite and PostgreSQL: expectations follow the declarations, and of
workers evaluating at once exactly one wins each late or fresh transition."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from eventflow._lineage import Edge
from eventflow._store import _lineage as store
from eventflow._store._engine import make_engine
from eventflow._store._migrate import upgrade


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    await asyncio.to_thread(upgrade, database_url)
    made = make_engine(database_url)
    try:
        yield made
    finally:
        await made.dispose()


async def test_an_expectation_taken_out_goes_and_an_unread_dataset_leaves_the_graph(
    engine: AsyncEngine,
) -> None:
    await store.declare(engine, [Edge("a", "kafka:x", "reads", 5.0)], {"a"})
    assert await store.touch(engine, "kafka:x", time.time() - 100)
    assert not await store.touch(engine, "kafka:x", time.time() - 200)  # never back
    graph = await store.load(engine)
    assert graph.datasets["kafka:x"].late(time.time())

    await store.declare(
        engine, [Edge("a", "kafka:x", "reads", 30.0), Edge("b", "kafka:x", "reads", 500.0)], {"a"}
    )
    await store.declare(engine, [Edge("b", "kafka:x", "reads", 500.0)], {"b"})
    assert (await store.load(engine)).datasets["kafka:x"].expect_seconds == 30.0  # the shortest

    await store.declare(engine, [Edge("a", "kafka:x", "reads")], {"a"})
    await store.declare(engine, [Edge("b", "kafka:x", "reads")], {"b"})
    dataset = (await store.load(engine)).datasets["kafka:x"]
    assert dataset.expect_seconds is None and not dataset.late(time.time())

    await store.declare(engine, [], {"a", "b"})
    assert "kafka:x" not in (await store.load(engine)).datasets


async def test_one_of_many_evaluators_wins_each_transition(engine: AsyncEngine) -> None:
    await store.declare(engine, [Edge("a", "kafka:x", "reads", 1.0)], {"a"})
    now = time.time()
    won = await asyncio.gather(*(store.turn_late(engine, "kafka:x", now) for _ in range(8)))
    assert sorted(won) == [False] * 7 + [True]
    assert not await store.turn_late(engine, "kafka:x", now)
    won = await asyncio.gather(*(store.turn_fresh(engine, "kafka:x", now) for _ in range(8)))
    assert sorted(won) == [False] * 7 + [True]
