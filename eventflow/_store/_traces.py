"""The stored trace context of a run: what a run that resumes or retries it links to."""

from __future__ import annotations

import asyncio
import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from . import _schema as schema

logger = logging.getLogger("eventflow.tracing")

LOOKUP_TIMEOUT = 5.0
"""Seconds the store gets to answer: a run never waits longer for its link."""


async def trace_context(engine: AsyncEngine, run_id: str) -> str | None:
    """The `traceparent` stored with run `run_id`; None if it has none or the store
    does not answer in time (the run then starts without the link)."""
    runs = schema.flow_runs
    try:
        async with asyncio.timeout(LOOKUP_TIMEOUT), engine.connect() as conn:
            value = await conn.scalar(sa.select(runs.c.trace_context).where(runs.c.id == run_id))
    except Exception as error:
        logger.warning("tracing: cannot read the trace context of run %s: %s", run_id, error)
        return None
    return None if value is None else str(value)
