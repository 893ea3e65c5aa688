"""Reading what the store holds, straight from the database."""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from eventflow._store import _schema as schema
from eventflow._store._engine import make_engine
from eventflow._store._reader import RunReader


async def rows(url: str, table: sa.Table, *where: Any) -> list[dict[str, Any]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(sa.select(table).where(*where))
            return [dict(r) for r in result.mappings()]
    finally:
        await engine.dispose()


async def flow_runs(url: str, **filters: Any) -> list[dict[str, Any]]:
    clauses = [getattr(schema.flow_runs.c, k) == v for k, v in filters.items()]
    return await rows(url, schema.flow_runs, *clauses)


async def run_detail(url: str, run_id: str) -> dict[str, Any]:
    reader = RunReader(url)
    try:
        return await reader.get_flow_run(run_id)
    finally:
        await reader.close()


def sync(coroutine: Any) -> Any:
    """Run a query from a sync test."""
    return asyncio.run(coroutine)
