"""The outbox table: messages flows published, stored with their run's COMPLETED state.

The writer inserts a run's messages (its COMPLETED row's `outbox`) in the
batch's transaction, right after the flow runs, and only where the stored run
is COMPLETED by then: a row the store refused (a final state already there, a
stale fencing token) brings no message. A message id stored already is left
alone (a unique key): the same event completed again publishes nothing more.

A relay (eventflow/_runtime/_relay.py) holds a destination's fence
(`outbox_scope`) while it sends; its writes here check that fence, so a relay
that lost it (frozen, cut off) changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _schema as schema

Row = dict[str, Any]

_COLUMNS = ("message_id", "destination", "flow_run_id", "key", "value", "headers", "created_at")


def messages(flow_runs: Iterable[Row]) -> list[Row]:
    """The messages of a batch's COMPLETED runs, in run order, then publish order."""
    found: list[Row] = []
    for row in flow_runs:
        outbox = row.get("outbox")
        if outbox and row["state_type"] == "COMPLETED":
            found.extend(outbox)
    return found


_SQLITE_INSERT = (
    f"INSERT INTO outbox ({', '.join(_COLUMNS)}) SELECT {', '.join('?' for _ in _COLUMNS)}"
    " WHERE EXISTS (SELECT 1 FROM flow_runs WHERE id = ? AND state_type = 'COMPLETED')"
    " ON CONFLICT (message_id) DO NOTHING"
)


def write_sqlite(conn: sa.Connection, rows: list[Row]) -> None:
    """Insert `rows` in the caller's transaction (SQLite)."""
    values = [(*(row[c] for c in _COLUMNS), row["flow_run_id"]) for row in rows]
    conn.exec_driver_sql(_SQLITE_INSERT, values)


POSTGRES_INSERT = (
    f"INSERT INTO outbox ({', '.join(_COLUMNS)})"
    " SELECT u.message_id, u.destination, u.flow_run_id, u.key, u.value, u.headers,"
    " to_timestamp(u.created_at)"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[], $6::text[],"
    " $7::float8[]) WITH ORDINALITY"
    f" AS u({', '.join(_COLUMNS)}, n)"
    " JOIN flow_runs r ON r.id = u.flow_run_id AND r.state_type = 'COMPLETED'"
    " ORDER BY u.n ON CONFLICT (message_id) DO NOTHING"
)
"""PostgreSQL: one statement for the batch's messages, `seq` in the batch's order."""


def postgres_arguments(rows: list[Row]) -> list[list[Any]]:
    return [[row[c] for row in rows] for c in _COLUMNS]


# -- the relay's side ---------------------------------------------------------------------

OUTBOX = schema.outbox


def outbox_scope(destination: str) -> str:
    return f"outbox:{destination}"


async def _fence_current(conn: AsyncConnection, scope: str, epoch: int) -> bool:
    fences = schema.fences
    query = sa.select(fences.c.epoch).where(fences.c.scope == scope)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return (await conn.execute(query)).scalar() == epoch


async def pending(engine: AsyncEngine, destination: str, limit: int) -> list[Row]:
    """The oldest `limit` messages not yet published, in `seq` order."""
    query = (
        sa.select(OUTBOX.c.seq, OUTBOX.c.message_id, OUTBOX.c.key, OUTBOX.c.value, OUTBOX.c.headers)
        .where(OUTBOX.c.destination == destination, OUTBOX.c.published_at.is_(None))
        .order_by(OUTBOX.c.seq)
        .limit(limit)
    )
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(query)]


async def assign(
    engine: AsyncEngine, token: tuple[str, int], seqs: Sequence[int], attempt: int
) -> bool:
    """Note that `seqs` go in the relay's transaction `attempt`; False if its fence is lost."""
    async with engine.begin() as conn:
        if not await _fence_current(conn, *token):
            return False
        for start in range(0, len(seqs), 500):
            chunk = list(seqs[start : start + 500])
            await conn.execute(
                OUTBOX.update()
                .where(OUTBOX.c.seq.in_(chunk), OUTBOX.c.published_at.is_(None))
                .values(attempt=attempt)
            )
    return True


async def mark_published(
    engine: AsyncEngine, token: tuple[str, int], destination: str, up_to_attempt: int
) -> int | None:
    """Every message sent in a transaction numbered up to `up_to_attempt` is published;
    how many were marked now (None: the fence is lost, nothing was)."""
    async with engine.begin() as conn:
        if not await _fence_current(conn, *token):
            return None
        result = await conn.execute(
            OUTBOX.update()
            .where(
                OUTBOX.c.destination == destination,
                OUTBOX.c.published_at.is_(None),
                OUTBOX.c.attempt <= up_to_attempt,
            )
            .values(published_at=time.time())
        )
        return int(result.rowcount or 0)


async def last_attempt(engine: AsyncEngine, destination: str) -> int:
    """The highest transaction number any relay of `destination` assigned (0: none)."""
    query = sa.select(sa.func.max(OUTBOX.c.attempt)).where(OUTBOX.c.destination == destination)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar() or 0)


async def backlogs(engine: AsyncEngine) -> dict[str, tuple[int, float | None]]:
    """By destination with messages waiting: how many, and since when the oldest."""
    query = (
        sa.select(OUTBOX.c.destination, sa.func.count(), sa.func.min(OUTBOX.c.created_at))
        .where(OUTBOX.c.published_at.is_(None))
        .group_by(OUTBOX.c.destination)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {name: (int(count), oldest.timestamp()) for name, count, oldest in rows}


async def prune_published(conn: AsyncConnection, before: float) -> None:
    """Delete messages published before `before` (retention)."""
    await conn.execute(
        OUTBOX.delete().where(OUTBOX.c.published_at.is_not(None), OUTBOX.c.published_at < before)
    )
