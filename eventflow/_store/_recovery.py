"""Queries the streaming runtime needs at assignment and for crash recovery."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _schema as schema
from ._fences import claim, partition_scope, register_worker, release

ACTIVE_STATES = ("PENDING", "RUNNING", "RETRYING")
DONE_STATES = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass(frozen=True, slots=True)
class FinishedRun:
    """The final run an event already has: it must not run again."""

    run_id: str
    state_type: str
    error: str | None


async def load_offsets(
    engine: AsyncEngine, group_id: str, partitions: Sequence[tuple[str, int]]
) -> dict[tuple[str, int], int]:
    """The next offsets stored for `group_id`, for those of `partitions` that have one."""
    if not partitions:
        return {}
    table = schema.consumer_offsets
    topics = sorted({topic for topic, _ in partitions})
    query = sa.select(table.c.topic, table.c.partition, table.c.next_offset).where(
        table.c.group_id == group_id, table.c.topic.in_(topics)
    )
    wanted = set(partitions)
    async with engine.connect() as conn:
        found = (await conn.execute(query)).all()
    return {(t, p): int(o) for t, p, o in found if (t, p) in wanted}


async def finished_events(
    engine: AsyncEngine,
    flow_name: str,
    stream: str,
    partition: int,
    from_offset: int,
    group: str | None = None,
) -> dict[int, FinishedRun]:
    """Events at or after `from_offset` whose run of `flow_name` already ended (not crashed).

    Only runs of consumer group `group` count (and runs stored without a group,
    before migration 0009): another group reading the same topic runs its events.
    """
    runs = schema.flow_runs
    query = sa.select(runs.c.event_offset, runs.c.id, runs.c.state_type, runs.c.error).where(
        runs.c.event_source == stream,
        runs.c.event_partition == partition,
        runs.c.event_offset >= from_offset,
        runs.c.flow_name == flow_name,
        runs.c.state_type.in_(DONE_STATES),
        sa.or_(runs.c.event_group.is_(None), runs.c.event_group == group),
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    result: dict[int, FinishedRun] = {}
    for offset, run_id, state_type, error in rows:
        previous = result.get(offset)
        if previous is None or state_type == "COMPLETED":
            result[int(offset)] = FinishedRun(run_id, state_type, error)
    return result


@dataclass(frozen=True, slots=True)
class CrashedRun:
    """A flow run a sweep marked CRASHED (its worker died with it in flight)."""

    run_id: str
    flow_name: str
    run_name: str | None
    event_id: str | None
    event_key: str | None


@dataclass(frozen=True, slots=True)
class Sweep:
    """What one sweep found: the dead workers, and the runs it marked CRASHED."""

    workers: list[str]
    runs: list[CrashedRun]


async def _crash(
    conn: AsyncConnection, which: sa.ColumnElement[bool], now: float, error: str
) -> list[CrashedRun]:
    """End the runs in flight that `which` selects (and their task runs) CRASHED."""
    runs, tasks = schema.flow_runs, schema.task_runs
    # the predicate word for word as the partial index's (ix_flow_runs_worker_active)
    active = sa.and_(sa.text(schema.ACTIVE), which)
    await conn.execute(
        tasks.update()
        .where(
            tasks.c.flow_run_id.in_(sa.select(runs.c.id).where(active)),
            tasks.c.state_type.in_(ACTIVE_STATES),
        )
        .values(state_type="CRASHED", state_name="Crashed", ended_at=now, error=error)
    )
    changed = await conn.execute(
        runs.update()
        .where(active)
        .values(state_type="CRASHED", state_name="Crashed", ended_at=now, error=error)
        .returning(runs.c.id, runs.c.flow_name, runs.c.name, runs.c.event_id, runs.c.event_key)
    )
    return [CrashedRun(*row) for row in changed.all()]


async def sweep_crashed(engine: AsyncEngine, lease_seconds: float, alive: str) -> Sweep:
    """Mark the in-flight runs of workers whose heartbeat lapsed as CRASHED.

    `alive` is the sweeping worker itself, never dead whatever its heartbeat says.
    Of two workers sweeping at once, each reports only the runs it changed
    (`UPDATE ... RETURNING`), so a crash is notified once. Every fence the dead
    workers held moves on, in the same transaction: one that was only frozen or
    cut off writes nothing more under what it held (eventflow/_store/_fences.py).
    """
    now = time.time()
    cutoff = now - lease_seconds
    workers = schema.workers
    dead = sa.select(workers.c.id).where(
        workers.c.stopped_at.is_(None), workers.c.heartbeat_at < cutoff, workers.c.id != alive
    )
    async with engine.begin() as conn:
        dead_ids = [row[0] for row in (await conn.execute(dead)).all()]
        if not dead_ids:
            return Sweep([], [])
        await release(conn, dead_ids, now)  # first: see `release`
        crashed = await _crash(
            conn,
            schema.flow_runs.c.worker_id.in_(dead_ids),
            now,
            "the worker running it stopped heartbeating (killed, crashed, frozen or cut off)",
        )
        await conn.execute(
            workers.update().where(workers.c.id.in_(dead_ids)).values(stopped_at=now)
        )
    return Sweep(dead_ids, crashed)


async def revive_worker(
    engine: AsyncEngine, row: Mapping[str, Any]
) -> tuple[int, list[CrashedRun]]:
    """A worker that lost its lease (declared dead, or frozen past it) comes back.

    In one transaction: its runs in flight end CRASHED (it dropped them: what it
    queued under the old lease is never written), every fence it held moves on,
    and it claims its lease anew. Returns the lease's epoch and the runs ended.
    """
    now = time.time()
    worker_id = row["id"]
    async with engine.begin() as conn:
        await release(conn, [worker_id], now)  # first: see `release`
        crashed = await _crash(
            conn,
            schema.flow_runs.c.worker_id == worker_id,
            now,
            "its worker lost its lease (frozen or cut off past it) before the run ended",
        )
        epoch = await register_worker(conn, row)
    return epoch, crashed


async def claim_partitions(
    engine: AsyncEngine,
    flow_name: str,
    group: str,
    partitions: Sequence[tuple[str, int]],
    holder: str,
) -> tuple[dict[tuple[str, int], int], list[CrashedRun]]:
    """Claim a consumer group's partitions for `holder`'s runs of `flow_name` (before
    reading their offsets).

    Each partition's fence moves on, so whoever held it before writes nothing
    more there; its runs in flight on these partitions (a worker that was
    frozen, cut off or slow to give them up) end CRASHED: they can never be
    written as finished. Returns the new epochs and the runs ended.
    """
    runs = schema.flow_runs
    by_scope = {partition_scope(group, t, p, flow_name): (t, p) for t, p in partitions}
    now = time.time()
    crashed: list[CrashedRun] = []
    async with engine.begin() as conn:
        epochs = await claim(conn, by_scope, holder)
        for topic in sorted({t for t, _ in partitions}):
            numbers = sorted(p for t, p in partitions if t == topic)
            crashed += await _crash(
                conn,
                sa.and_(
                    runs.c.flow_name == flow_name,
                    runs.c.event_group == group,
                    runs.c.event_source == topic,
                    runs.c.event_partition.in_(numbers),
                ),
                now,
                "its partition was claimed by another worker before it ended"
                " (its worker was frozen, cut off, or too slow to give the partition up)",
            )
    return {by_scope[scope]: epoch for scope, epoch in epochs.items()}, crashed


async def finished_event_ids(
    engine: AsyncEngine, flow_name: str, event_ids: Sequence[str]
) -> dict[str, FinishedRun]:
    """Of `event_ids` (unpartitioned sources), those whose run of `flow_name` already ended."""
    if not event_ids:
        return {}
    runs = schema.flow_runs
    query = sa.select(runs.c.event_id, runs.c.id, runs.c.state_type, runs.c.error).where(
        runs.c.event_id.in_(list(event_ids)),
        runs.c.event_partition.is_(None),  # as the partial index ix_flow_runs_event_id
        runs.c.flow_name == flow_name,
        runs.c.state_type.in_(DONE_STATES),
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    result: dict[str, FinishedRun] = {}
    for event_id, run_id, state, error in rows:
        previous = result.get(str(event_id))
        if previous is None or state == "COMPLETED":  # a completed replay outranks the failure
            result[str(event_id)] = FinishedRun(run_id, state, error)
    return result
