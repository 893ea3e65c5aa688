"""Leases and retention against both databases."""

from __future__ import annotations

import time

import pytest

from eventflow import ConfigurationError, flow, get_run_logger, task, task_input_hash
from eventflow._defaults import default_writer_async
from eventflow._settings import parse_duration
from eventflow._store import _schema as schema
from eventflow._store._cache import store_result
from eventflow._store._engine import make_engine
from eventflow._store._leases import acquire_lease, release_lease
from eventflow._store._migrate import upgrade
from eventflow._store._retention import prune
from tests._store import flow_runs, rows


async def test_a_lease_has_one_holder_until_it_expires_or_is_released(database_url: str) -> None:
    upgrade(database_url)
    engine = make_engine(database_url)
    try:
        assert await acquire_lease(engine, "schedule:x", "worker-a", ttl=0.5)
        assert not await acquire_lease(engine, "schedule:x", "worker-b", ttl=0.5)
        assert await acquire_lease(engine, "schedule:x", "worker-a", ttl=0.5)  # renewed
        assert await acquire_lease(engine, "schedule:y", "worker-b", ttl=0.5)  # another name
        deadline = time.monotonic() + 5
        while not await acquire_lease(engine, "schedule:x", "worker-b", ttl=30):
            assert time.monotonic() < deadline, "the lease never expired"
        assert not await acquire_lease(engine, "schedule:x", "worker-a", ttl=30)
        await release_lease(engine, "schedule:x", "worker-a")  # not the holder: no effect
        assert not await acquire_lease(engine, "schedule:x", "worker-a", ttl=30)
        await release_lease(engine, "schedule:x", "worker-b")
        assert await acquire_lease(engine, "schedule:x", "worker-a", ttl=30)
    finally:
        await engine.dispose()


@task
def step(x: int) -> int:
    get_run_logger().info("step %d", x)
    return x + 1


@task(cache_key_fn=task_input_hash)
def cached_step(x: int) -> int:
    return x


@flow(name="retained")
def retained(x: int) -> int:
    return step(step.submit(cached_step(x)))


async def test_prune_deletes_finished_runs_with_their_records_and_keeps_active_ones(
    any_default_store: str,
) -> None:
    url = any_default_store
    for i in range(5):
        assert retained(i) == i + 2
    writer = await default_writer_async()
    now = time.time()
    writer.put_flow_run(
        {"id": "active-run", "flow_name": "retained", "state_type": "RUNNING"}
        | {"state_name": "Running", "run_count": 1, "created_at": now - 3600}
    )
    await writer.flush()
    assert {r["result"] for r in await rows(url, schema.task_runs)} == {str(i) for i in range(7)}
    assert len(await rows(url, schema.task_cache)) == 5
    engine = make_engine(url)
    try:
        for key, expires_at in (("expired", now - 1), ("fresh", now + 3600)):
            await store_result(engine, key, "1", "t", "active-run", now - 7200, expires_at)
        assert await prune(engine, now - 3600) == 0  # nothing that old
        assert len(await flow_runs(url)) == 6
        keys = {c["cache_key"] for c in await rows(url, schema.task_cache)}
        assert "fresh" in keys and "expired" not in keys and len(keys) == 6  # expired: gone
        assert await prune(engine, time.time() + 1, batch_size=2) == 5
    finally:
        await engine.dispose()
    assert [r["id"] for r in await flow_runs(url)] == ["active-run"]
    # results go with their task runs, cache entries with their runs
    assert [c["cache_key"] for c in await rows(url, schema.task_cache)] == ["fresh"]
    assert await rows(url, schema.task_runs) == []
    assert await rows(url, schema.task_run_edges) == []
    assert await rows(url, schema.logs) == []


def test_durations_read_like_people_write_them() -> None:
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("12h") == 12 * 3600
    assert parse_duration("30m") == 1800
    assert parse_duration("45s") == 45
    assert parse_duration("2w") == 14 * 86400
    assert parse_duration("90") == 90
    with pytest.raises(ConfigurationError, match="invalid duration 'soon'"):
        parse_duration("soon")
    with pytest.raises(ConfigurationError, match="negative"):
        parse_duration("-1d")
