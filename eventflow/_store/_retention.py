"""Retention: delete finished runs older than a cutoff, so a continuous stream stays bounded.

Runs still active are never touched, and neither are the committed offsets.
Deleting goes in batches of runs (with their task runs and the results they
kept, edges, logs and task cache entries), each its own short transaction, so
writers are never blocked for long. Expired cache entries go too.

A pruned run no longer deduplicates a redelivery of its event: keep runs longer
than any source may redeliver (Kafka: the committed offset moves past them at
once; HTTP sources: their dedupe window). Settled idempotency claims go too:
keep runs longer than any `idempotency_window`. Published outbox messages go
by the same cutoff (by when they were published); waiting ones never do.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _schema as schema
from ._outbox import prune_published
from ._recovery import DONE_STATES

PRUNABLE_STATES = (*DONE_STATES, "CRASHED")


async def prune(engine: AsyncEngine, before: float, *, batch_size: int = 5_000) -> int:
    """Delete finished flow runs created before `before` (epoch seconds); how many."""
    runs = schema.flow_runs
    old = (
        sa.select(runs.c.id)
        .where(runs.c.state_type.in_(PRUNABLE_STATES), runs.c.created_at < before)
        .order_by(runs.c.created_at)
        .limit(batch_size)
    )
    deleted = 0
    while True:
        async with engine.begin() as conn:
            ids = list((await conn.execute(old)).scalars().all())
            if not ids:
                break
            for table in (schema.logs, schema.task_run_edges, schema.task_runs, schema.task_cache):
                await conn.execute(table.delete().where(table.c.flow_run_id.in_(ids)))
            await conn.execute(runs.delete().where(runs.c.id.in_(ids)))
        deleted += len(ids)
    async with engine.begin() as conn:
        workers = schema.workers
        await conn.execute(
            schema.source_status.delete().where(schema.source_status.c.updated_at < before)
        )
        await conn.execute(
            workers.delete().where(workers.c.stopped_at.is_not(None), workers.c.stopped_at < before)
        )
        cache = schema.task_cache
        await conn.execute(
            cache.delete().where(cache.c.expires_at.is_not(None), cache.c.expires_at < time.time())
        )
        await prune_published(conn, before)
        claims = schema.idempotency_keys
        await conn.execute(
            claims.delete().where(
                sa.or_(
                    sa.and_(claims.c.state == "COMPLETED", claims.c.completed_at < before),
                    sa.and_(claims.c.state == "RELEASED", claims.c.claimed_at < before),
                )
            )
        )
    return deleted


async def count_prunable(engine: AsyncEngine, before: float) -> dict[tuple[str, str], int]:
    """How many runs `prune(engine, before)` would delete, by (flow name, state type)."""
    runs = schema.flow_runs
    query = (
        sa.select(runs.c.flow_name, runs.c.state_type, sa.func.count())
        .where(runs.c.state_type.in_(PRUNABLE_STATES), runs.c.created_at < before)
        .group_by(runs.c.flow_name, runs.c.state_type)
    )
    async with engine.connect() as conn:
        return {(flow, state): n for flow, state, n in (await conn.execute(query)).all()}
