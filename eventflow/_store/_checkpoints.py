"""Source checkpoints: where an unpartitioned source resumes after a restart.

Written through the RunWriter (`put_checkpoint`, in order with the run records
before it); read here when the source starts.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _schema as schema


async def read_checkpoint(engine: AsyncEngine, subscription: str) -> str | None:
    table = schema.source_checkpoints
    async with engine.connect() as conn:
        result = await conn.execute(
            sa.select(table.c.value).where(table.c.subscription == subscription)
        )
        value: str | None = result.scalar()
        return value
