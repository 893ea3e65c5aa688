"""The task cache's table: a result by cache key, shared by every worker on the store."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _schema as schema
from ._engine import make_engine

_engines: dict[tuple[str, asyncio.AbstractEventLoop], AsyncEngine] = {}
"""One engine per store and event loop (async connections belong to the loop that made them)."""


def cache_engine(url: str) -> AsyncEngine:
    key = (url, asyncio.get_running_loop())
    engine = _engines.get(key)
    if engine is None:
        engine = _engines[key] = make_engine(url, statement_timeout=10.0)
    return engine


async def cached_result(engine: AsyncEngine, key: str) -> tuple[str, str, str | None] | None:
    """(task run id, result JSON, the task's name) kept under `key` and not expired, or
    None. The name is None when the task run that computed it was pruned."""
    cache, tasks = schema.task_cache, schema.task_runs
    query = (
        sa.select(cache.c.task_run_id, cache.c.result, tasks.c.task_name)
        .select_from(cache.outerjoin(tasks, tasks.c.id == cache.c.task_run_id))
        .where(
            cache.c.cache_key == key,
            sa.or_(cache.c.expires_at.is_(None), cache.c.expires_at > time.time()),
        )
    )
    async with engine.connect() as conn:
        row = (await conn.execute(query)).first()
    if row is None:
        return None
    return str(row[0]), str(row[1]), None if row[2] is None else str(row[2])


async def store_result(
    engine: AsyncEngine,
    key: str,
    result: str,
    task_run_id: str,
    flow_run_id: str,
    created_at: float,
    expires_at: float | None,
) -> None:
    """Keep `result` under `key` (replacing an entry, expired or not)."""
    values: dict[str, Any] = {
        "cache_key": key,
        "result": result,
        "task_run_id": task_run_id,
        "flow_run_id": flow_run_id,
        "created_at": created_at,
        "expires_at": expires_at,
    }
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    insert = dialect.insert(schema.task_cache).values(**values)
    statement = insert.on_conflict_do_update(
        index_elements=["cache_key"],
        set_={k: insert.excluded[k] for k in values if k != "cache_key"},
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
