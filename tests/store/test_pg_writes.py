"""The PostgreSQL write path: binary COPY for fresh runs and logs, upserts for the others."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import asyncpg
import pytest

from eventflow._store import _schema as schema
from eventflow._store._batch import Batch, is_transient
from eventflow._store._migrate import upgrade
from eventflow._store._pg_writes import PostgresWriter
from tests._services import Postgres
from tests._store import rows

pytestmark = pytest.mark.postgres


def run_row(run_id: str, state: str, result: str | None = None) -> dict[str, object]:
    now = time.time()
    return {
        "id": run_id,
        "flow_name": "f",
        "state_type": state,
        "state_name": state.title(),
        "result": result,
        "run_count": 1,
        "created_at": now,
        "ended_at": now if state == "COMPLETED" else None,
    }


def batch_of(*runs: dict[str, object]) -> Batch:
    batch = Batch()
    batch.flows["f"] = {"name": "f", "version": None, "created_at": time.time()}
    for run in runs:
        batch.flow_runs[str(run["id"])] = run
    return batch


@pytest.fixture
def url(postgres: Postgres) -> str:
    url = postgres.create_database()
    upgrade(url)
    return url


async def test_a_run_stored_unfinished_is_updated_in_place(url: str) -> None:
    writer = PostgresWriter(url)
    try:
        await writer.commit(batch_of(run_row("a" * 32, "RUNNING")))
        await writer.commit(batch_of(run_row("a" * 32, "COMPLETED", "1")))
    finally:
        await writer.close()
    [stored] = await rows(url, schema.flow_runs)
    assert (stored["state_type"], stored["result"]) == ("COMPLETED", "1")


async def test_a_run_another_writer_stored_is_upserted_after_the_unique_violation(
    url: str,
) -> None:
    """A resumed or replayed run: this writer never saw it, the row exists."""
    other, writer = PostgresWriter(url), PostgresWriter(url)
    try:
        await other.commit(batch_of(run_row("b" * 32, "RUNNING")))
        await writer.commit(
            batch_of(run_row("b" * 32, "COMPLETED", "2"), run_row("c" * 32, "COMPLETED"))
        )
    finally:
        await other.close()
        await writer.close()
    stored = {r["id"]: r for r in await rows(url, schema.flow_runs)}
    assert stored["b" * 32]["state_type"] == "COMPLETED" and stored["b" * 32]["result"] == "2"
    assert stored["c" * 32]["state_type"] == "COMPLETED"


async def test_a_value_asyncpg_cannot_encode_is_refused_not_retried(url: str) -> None:
    writer = PostgresWriter(url)
    bad = run_row("d" * 32, "COMPLETED")
    bad["run_count"] = "many"
    try:
        with pytest.raises(asyncpg.DataError) as refused:
            await writer.commit(batch_of(bad))
        assert not is_transient(refused.value)
        await writer.commit(batch_of(run_row("e" * 32, "COMPLETED")))  # the writer goes on
    finally:
        await writer.close()
    assert [r["id"] for r in await rows(url, schema.flow_runs)] == ["e" * 32]


async def test_copied_rows_keep_their_timestamps_to_the_microsecond(url: str) -> None:
    """Fresh rows go by binary COPY, timestamps encoded from epoch seconds or datetimes."""
    created = 1_764_590_400.123456  # 2025-12-01T12:00:00.123456Z
    ended = datetime(2026, 12, 1, 8, 30, 15, 654321, tzinfo=UTC)
    run = run_row("f" * 32, "COMPLETED", "3") | {"created_at": created, "ended_at": ended}
    batch = batch_of(run)
    batch.logs.append(
        {
            "flow_run_id": "f" * 32,
            "task_run_id": None,
            "level": 20,
            "logger": "eventflow.runs.f",
            "message": "hello",
            "timestamp": created,
        }
    )
    writer = PostgresWriter(url)
    try:
        await writer.commit(batch)
    finally:
        await writer.close()
    [stored] = await rows(url, schema.flow_runs)
    assert stored["created_at"] == datetime(2025, 12, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert stored["ended_at"] == ended
    assert stored["started_at"] is None and stored["result"] == "3"
    [log] = await rows(url, schema.logs)
    assert (log["message"], log["timestamp"]) == ("hello", stored["created_at"])
