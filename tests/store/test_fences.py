"""Fencing in the store, on SQLite and PostgreSQL, from the writer's thread and its process:
a claim that moved on refuses the records made under the old one, final states stay
final, stored offsets never move back, and a swept worker's lease is fenced."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from eventflow._store import _schema as schema
from eventflow._store._fences import Fence, partition_scope, worker_scope
from eventflow._store._migrate import upgrade
from eventflow._store._runstore import SqlRunStore
from eventflow._store._writer import RunWriter
from tests._store import rows
from tests.store.test_writer import flow_run

GROUP, TOPIC, FLOW = "g", "orders", "f"


@pytest.fixture(params=["thread", "process"])
async def writer(database_url: str, request: pytest.FixtureRequest) -> AsyncIterator[RunWriter]:
    await asyncio.to_thread(upgrade, database_url)
    writer = RunWriter(database_url, flush_interval=0.05, process=request.param == "process")
    await asyncio.to_thread(writer.start)
    yield writer
    await asyncio.to_thread(writer.close)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[SqlRunStore]:
    store = SqlRunStore.open(database_url)
    yield store
    await store.close()


async def claim(store: SqlRunStore, holder: str, *partitions: int) -> dict[int, Fence]:
    epochs, _ = await store.claim_partitions(FLOW, GROUP, [(TOPIC, p) for p in partitions], holder)
    return {
        p: Fence(partition_scope(GROUP, TOPIC, p, FLOW), epoch) for (_, p), epoch in epochs.items()
    }


def event_run(run_id: str, fence: Fence, offset: int, state: str = "RUNNING") -> dict[str, Any]:
    return flow_run(
        run_id,
        state,
        worker_id="a",
        event_source=TOPIC,
        event_partition=0,
        event_offset=offset,
        event_group=GROUP,
        fence=fence.token,
    )


def task_run(task_id: str, run_id: str, fence: Fence, state: str = "COMPLETED") -> dict[str, Any]:
    now = time.time()
    return {
        "id": task_id,
        "flow_run_id": run_id,
        "task_name": "t",
        "name": "t-0",
        "state_type": state,
        "state_name": state.title(),
        "run_count": 1,
        "created_at": now,
        "started_at": now,
        "ended_at": now,
        "fence": fence.token,
    }


async def test_records_made_under_a_claim_that_moved_on_are_refused(
    writer: RunWriter, store: SqlRunStore, database_url: str
) -> None:
    reported: list[list[Fence]] = []
    writer.fences.on_refused = reported.append
    old = (await claim(store, "a", 0))[0]
    writer.fences.watch(old)
    writer.put_flow_run(event_run("r1", old, 0))
    writer.put_offsets(GROUP, [(TOPIC, 0, 1)], fences={(TOPIC, 0): old.token})
    await writer.flush()

    new = (await claim(store, "b", 0))[0]  # another worker took the partition over
    assert new.epoch == old.epoch + 1
    # the frozen worker wakes up and writes what it had in flight, under its old claim
    writer.put_flow_run(event_run("r1", old, 0, "COMPLETED"))
    writer.put_task_run(task_run("t1", "r1", old))
    writer.put_flow_run(event_run("r2", old, 1, "COMPLETED"))
    writer.put_offsets(GROUP, [(TOPIC, 0, 2)], fences={(TOPIC, 0): old.token})
    await writer.flush()

    runs = {r["id"]: r for r in await rows(database_url, schema.flow_runs)}
    assert set(runs) == {"r1"}  # r2 never written
    # the new claim ended the run left in flight; the old holder could not complete it
    assert (runs["r1"]["state_type"], runs["r1"]["worker_id"]) == ("CRASHED", "a")
    assert await rows(database_url, schema.task_runs) == []
    (offset,) = await rows(database_url, schema.consumer_offsets)
    assert offset["next_offset"] == 1
    assert old.lost and not new.lost
    assert [[f.token for f in lost] for lost in reported] == [[old.token]]

    # the new holder's records go through
    writer.put_flow_run(event_run("r3", new, 1, "COMPLETED"))
    writer.put_offsets(GROUP, [(TOPIC, 0, 2)], fences={(TOPIC, 0): new.token})
    await writer.flush()
    assert {r["id"] for r in await rows(database_url, schema.flow_runs)} == {"r1", "r3"}
    (offset,) = await rows(database_url, schema.consumer_offsets)
    assert offset["next_offset"] == 2


async def test_a_final_state_is_never_changed(writer: RunWriter, database_url: str) -> None:
    writer.put_flow_run(flow_run("done", "COMPLETED", result='"first"'))
    writer.put_flow_run(flow_run("crashed", "CRASHED"))
    writer.put_task_run({**task_run("t", "done", Fence("x", 1)), "fence": None})
    await writer.flush()
    writer.put_flow_run(flow_run("done", "FAILED", result=None))
    writer.put_flow_run(flow_run("crashed", "COMPLETED"))
    writer.put_task_run({**task_run("t", "done", Fence("x", 1), "RUNNING"), "fence": None})
    await writer.flush()
    runs = {r["id"]: r for r in await rows(database_url, schema.flow_runs)}
    assert (runs["done"]["state_type"], runs["done"]["result"]) == ("COMPLETED", '"first"')
    assert runs["crashed"]["state_type"] == "CRASHED"
    (task,) = await rows(database_url, schema.task_runs)
    assert task["state_type"] == "COMPLETED"


async def test_a_stored_offset_never_moves_back(writer: RunWriter, database_url: str) -> None:
    writer.put_offsets(GROUP, [(TOPIC, 0, 500)])
    await writer.flush()
    writer.put_offsets(GROUP, [(TOPIC, 0, 144)])
    await writer.flush()
    (offset,) = await rows(database_url, schema.consumer_offsets)
    assert offset["next_offset"] == 500


async def test_the_sweep_fences_a_dead_worker_and_revive_gives_it_a_new_lease(
    writer: RunWriter, store: SqlRunStore, database_url: str
) -> None:
    now = time.time()
    row = {"id": "frozen", "hostname": "h", "pid": 1, "started_at": now, "heartbeat_at": now}
    epoch = await store.register_worker(row)
    lease = Fence(worker_scope("frozen"), epoch)
    partition = (await claim(store, "frozen", 0))[0]
    writer.fences.watch(lease)
    writer.put_flow_run(flow_run("polled", "RUNNING", worker_id="frozen", fence=lease.token))
    await writer.flush()

    await asyncio.sleep(0.01)
    sweep = await store.sweep_crashed(0.0, alive="other")  # its heartbeat is older than 0 s
    assert sweep.workers == ["frozen"] and [r.run_id for r in sweep.runs] == ["polled"]

    # what it queued before it knew is refused: runs, heartbeats, offsets
    writer.put_flow_run(flow_run("polled", "COMPLETED", worker_id="frozen", fence=lease.token))
    writer.put_flow_run(flow_run("other", "COMPLETED", worker_id="frozen", fence=lease.token))
    writer.put_worker(
        {**row, "heartbeat_at": time.time(), "stopped_at": None, "fence": lease.token}
    )
    writer.put_offsets(GROUP, [(TOPIC, 0, 7)], fences={(TOPIC, 0): partition.token})
    await writer.flush()
    assert lease.lost
    runs = {r["id"]: r["state_type"] for r in await rows(database_url, schema.flow_runs)}
    assert runs == {"polled": "CRASHED"}
    (worker,) = await rows(database_url, schema.workers)
    assert worker["stopped_at"] is not None
    assert await rows(database_url, schema.consumer_offsets) == []

    epoch, crashed = await store.revive_worker({**row, "heartbeat_at": time.time()})
    assert epoch > lease.epoch and crashed == []
    (worker,) = await rows(database_url, schema.workers)
    assert worker["stopped_at"] is None
    writer.put_flow_run(
        flow_run("again", "COMPLETED", worker_id="frozen", fence=(lease.scope, epoch))
    )
    await writer.flush()
    assert {r["id"] for r in await rows(database_url, schema.flow_runs)} == {"polled", "again"}


async def test_records_of_a_claim_dropped_by_its_owner_are_never_written(
    writer: RunWriter, store: SqlRunStore, database_url: str
) -> None:
    """A worker that found itself frozen drops what it queued, before any write."""
    fence = (await claim(store, "a", 0))[0]
    writer.fences.watch(fence)
    writer.fences.drop_lost([fence])
    writer.put_flow_run(event_run("late", fence, 0, "COMPLETED"))
    await writer.flush()
    assert await rows(database_url, schema.flow_runs) == []
