"""RunWriter against real databases: group commit, idempotence, durability, outages."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from eventflow._store import _schema as schema
from eventflow._store._migrate import upgrade
from eventflow._store._writer import RunWriter
from tests._services import Postgres
from tests._store import rows


def flow_run(run_id: str, state: str = "COMPLETED", **extra: Any) -> dict[str, Any]:
    now = time.time()
    row = {
        "id": run_id,
        "flow_name": "f",
        "name": None,
        "state_type": state,
        "state_name": state.title(),
        "parameters": "{}",
        "result": None,
        "error": None,
        "run_count": 1,
        "parent_flow_run_id": None,
        "retry_of": None,
        "worker_id": None,
        "event_source": None,
        "event_partition": None,
        "event_offset": None,
        "event_id": None,
        "event_key": None,
        "event_payload": None,
        "event_time": None,
        "created_at": now,
        "started_at": now,
        "ended_at": now if state == "COMPLETED" else None,
    }
    row.update(extra)
    return row


@pytest.fixture(params=["thread", "process"])
def writer(database_url: str, request: pytest.FixtureRequest) -> Iterator[RunWriter]:
    """Writing from the writer's thread, and from a child process (as workers do)."""
    upgrade(database_url)
    writer = RunWriter(database_url, flush_interval=0.05, process=request.param == "process")
    writer.start()
    yield writer
    writer.close()


async def test_many_records_are_committed_in_few_transactions(
    writer: RunWriter, database_url: str
) -> None:
    for i in range(2000):
        writer.put_flow_run(flow_run(f"run-{i:05d}"))
    await writer.flush()
    stored = await rows(database_url, schema.flow_runs)
    assert len(stored) == 2000
    assert writer.stats.batches <= 3, writer.stats  # group commit, not a transaction per run


async def test_writes_are_idempotent_on_the_run_id(writer: RunWriter, database_url: str) -> None:
    writer.put_flow_run(flow_run("r1", "RUNNING"))
    await writer.flush()
    writer.put_flow_run(flow_run("r1", "COMPLETED", result='"done"'))
    writer.put_flow_run(flow_run("r1", "COMPLETED", result='"done"'))  # a redelivery writes again
    await writer.flush()
    (stored,) = await rows(database_url, schema.flow_runs)
    assert stored["state_type"] == "COMPLETED" and stored["result"] == '"done"'
    assert stored["ended_at"] is not None


async def test_the_latest_state_wins_within_one_batch(writer: RunWriter, database_url: str) -> None:
    for state in ("RUNNING", "RETRYING", "RUNNING", "FAILED"):
        writer.put_flow_run(flow_run("r2", state))
    await writer.flush()
    (stored,) = await rows(database_url, schema.flow_runs)
    assert stored["state_type"] == "FAILED"


async def test_a_row_changed_after_it_was_put_is_stored_as_it_was_put(
    writer: RunWriter, database_url: str
) -> None:
    """The engine goes on changing a run's row (its next state) while the writer's
    thread reads and pickles what was put: the writer keeps its own copy."""
    row = flow_run("r-snap", state="RUNNING")
    writer.put_flow_run(row)
    row.update(state_type="COMPLETED", state_name="Completed", result="changed, not put")
    await writer.flush()
    [stored] = await rows(database_url, schema.flow_runs)
    assert (stored["state_type"], stored["result"]) == ("RUNNING", None)


async def test_flush_means_durable_for_another_connection(
    writer: RunWriter, database_url: str
) -> None:
    writer.put_flow_run(flow_run("r3"))
    writer.put_task_run(
        {
            "id": "t3",
            "flow_run_id": "r3",
            "task_name": "t",
            "name": "t-0",
            "state_type": "COMPLETED",
            "state_name": "Completed",
            "run_count": 1,
            "error": None,
            "created_at": time.time(),
            "started_at": None,
            "ended_at": None,
        }
    )
    writer.put_log(
        {
            "flow_run_id": "r3",
            "task_run_id": "t3",
            "level": 20,
            "logger": "x",
            "message": "hello",
            "timestamp": time.time(),
        }
    )
    await writer.flush()
    assert [r["id"] for r in await rows(database_url, schema.task_runs)] == ["t3"]
    assert [r["message"] for r in await rows(database_url, schema.logs)] == ["hello"]


async def test_offsets_commit_with_the_runs_before_them(
    writer: RunWriter, database_url: str
) -> None:
    committed = asyncio.Event()
    loop = asyncio.get_running_loop()
    writer.put_flow_run(flow_run("r4", event_source="orders", event_partition=0, event_offset=9))
    writer.put_offsets(
        "group", [("orders", 0, 10)], on_commit=lambda: loop.call_soon_threadsafe(committed.set)
    )
    await asyncio.wait_for(committed.wait(), 10)
    (offset,) = await rows(database_url, schema.consumer_offsets)
    assert (offset["topic"], offset["partition"], offset["next_offset"]) == ("orders", 0, 10)
    assert len(await rows(database_url, schema.flow_runs)) == 1


async def test_a_refused_record_is_dropped_alone_and_the_rest_of_its_batch_is_stored(
    writer: RunWriter, database_url: str
) -> None:
    postgres = database_url.startswith("postgresql")
    writer.put_flow_run(flow_run("good-1"))
    writer.put_flow_run(flow_run("bad", state_type=None))  # NOT NULL: refused for its data
    # PostgreSQL refuses a NUL character (asyncpg reports it unclassified: SQLSTATE 22021)
    writer.put_flow_run(flow_run("nul", error="bad\x00byte"))
    writer.put_flow_run(flow_run("good-2"))
    writer.put_offsets("g", [("orders", 0, 3)])
    await writer.flush()  # does not raise or hang: the batch was salvaged

    stored = sorted(r["id"] for r in await rows(database_url, schema.flow_runs))
    assert stored == (["good-1", "good-2"] if postgres else ["good-1", "good-2", "nul"])
    (offset,) = await rows(database_url, schema.consumer_offsets)
    assert offset["next_offset"] == 3
    assert writer.stats.dropped == (2 if postgres else 1) and writer.healthy


def test_flush_blocking_from_a_thread(writer: RunWriter, database_url: str) -> None:
    writer.put_flow_run(flow_run("r5"))
    writer.flush_blocking(timeout=10)
    assert len(asyncio.run(rows(database_url, schema.flow_runs))) == 1


async def test_timestamps_read_back_as_aware_utc_datetimes(
    writer: RunWriter, database_url: str
) -> None:
    moment = 1_800_000_000.123456
    writer.put_flow_run(flow_run("r6", created_at=moment))
    await writer.flush()
    (stored,) = await rows(database_url, schema.flow_runs)
    assert stored["created_at"].timestamp() == pytest.approx(moment, abs=1e-5)
    assert stored["created_at"].utcoffset().total_seconds() == 0


@pytest.mark.postgres
@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
async def test_database_outage_keeps_the_data_and_recovers_by_itself(process: bool) -> None:
    server = Postgres.start_new()
    try:
        url = server.url()
        upgrade(url)
        writer = RunWriter(url, flush_interval=0.02, process=process)
        writer.start()
        writer.put_flow_run(flow_run("before"))
        await writer.flush()

        await asyncio.to_thread(server.stop)
        writer.put_flow_run(flow_run("during"))
        flushed = asyncio.ensure_future(writer.flush())
        deadline = time.monotonic() + 30
        while writer.healthy and time.monotonic() < deadline:  # noqa: ASYNC110 - polls a plain flag
            await asyncio.sleep(0.02)
        assert not writer.healthy and writer.last_error
        assert not flushed.done()  # nobody is told it is durable while it is not

        await asyncio.to_thread(server.start)
        await asyncio.wait_for(flushed, 60)
        assert writer.healthy
        ids = sorted(r["id"] for r in await rows(url, schema.flow_runs))
        assert ids == ["before", "during"]
        writer.close()
    finally:
        server.stop()


async def test_sqlite_store_is_in_wal_mode(sqlite_url: str) -> None:
    upgrade(sqlite_url)
    writer = RunWriter(sqlite_url)
    writer.start()
    writer.put_flow_run(flow_run("r7"))
    await writer.flush()
    writer.close()
    engine = sa.create_engine(sqlite_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
