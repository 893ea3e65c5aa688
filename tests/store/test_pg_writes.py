"""The PostgreSQL write path: plain inserts for fresh runs, upserts for the others."""

from __future__ import annotations

import time

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
