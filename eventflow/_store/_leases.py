"""Leases: a named lock in the run store with an expiry, held by one worker at a time.

Used for work only one worker of an app may do (firing a schedule's ticks). A
holder renews before `ttl` runs out; when it dies, the lease expires and another
worker takes it.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _schema as schema


async def acquire_lease(engine: AsyncEngine, name: str, holder: str, ttl: float) -> bool:
    """Take lease `name` for `ttl` seconds, or renew it; True while `holder` holds it."""
    leases = schema.leases
    now = time.time()
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(leases).values(name=name, holder=holder, expires_at=now + ttl)
    statement = statement.on_conflict_do_update(
        index_elements=[leases.c.name],
        set_={"holder": holder, "expires_at": now + ttl},
        where=sa.or_(leases.c.holder == holder, leases.c.expires_at < now),
    )
    async with engine.begin() as conn:
        await conn.execute(statement)
        current = await conn.execute(sa.select(leases.c.holder).where(leases.c.name == name))
        return current.scalar() == holder


async def release_lease(engine: AsyncEngine, name: str, holder: str) -> None:
    """Give lease `name` up now (if `holder` has it), so another worker need not wait."""
    leases = schema.leases
    async with engine.begin() as conn:
        await conn.execute(leases.delete().where(leases.c.name == name, leases.c.holder == holder))
