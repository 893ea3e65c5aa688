"""Idempotency claims: at most one run per (flow, key) completes within a window.

A run claims its key before it starts: a unique row per (flow, key) decides
races between workers (the INSERT that loses the conflict reads the winner's
row instead). The claim is settled by the writer in the transaction of the
run's final state: COMPLETED (later events with the key within the window are
duplicates) or RELEASED (the run failed or was interrupted: the next event with
the key may run). A claim held by a worker that stopped (gracefully, or marked
dead by the crash sweep) is taken over, unless its run had in fact completed.
Many claims share one transaction (`claim_keys`): one per event would bound a
worker to what the database does in round trips.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import _schema as schema

RUNNING, COMPLETED, RELEASED = "RUNNING", "COMPLETED", "RELEASED"

_CHUNK = 500
_LONGEST_KEY = 200


def stored_key(key: str) -> str:
    """The key as stored: a long one (over 200 characters) by its SHA-256."""
    if len(key) <= _LONGEST_KEY:
        return key
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Claim:
    """`claimed`: run it; `duplicate`: `run_id` completed within the window; `busy`: wait."""

    outcome: Literal["claimed", "duplicate", "busy"]
    run_id: str


async def claim_key(
    engine: AsyncEngine,
    flow_name: str,
    key: str,
    run_id: str,
    worker_id: str,
    window_seconds: float,
    now: float | None = None,
) -> Claim:
    """Claim `key` for run `run_id` of `flow_name`, or say who already has it."""
    claims = await claim_keys(engine, flow_name, [(key, run_id)], worker_id, window_seconds, now)
    return claims[run_id]


async def claim_keys(
    engine: AsyncEngine,
    flow_name: str,
    requests: Sequence[tuple[str, str]],
    worker_id: str,
    window_seconds: float,
    now: float | None = None,
) -> dict[str, Claim]:
    """Claim each `(key, run_id)` in one transaction; the outcome by run id.

    Of several requests for one key, the first is decided and the others are
    `busy` behind it (or duplicates of the same run).
    """
    now = time.time() if now is None else now
    first: dict[str, str] = {}
    for key, run_id in requests:
        first.setdefault(key, run_id)
    claims = schema.idempotency_keys
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    new = {"worker_id": worker_id, "state": RUNNING, "claimed_at": now, "completed_at": None}
    decided: dict[str, Claim] = {}
    async with engine.begin() as conn:
        keys = sorted(first)  # one lock order for every worker: no deadlocks between batches
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start : start + _CHUNK]
            await conn.execute(
                insert(claims)
                .values(
                    [{"flow_name": flow_name, "key": k, "run_id": first[k], **new} for k in chunk]
                )
                .on_conflict_do_nothing(index_elements=[claims.c.flow_name, claims.c.key])
            )
        rows = await _rows(conn, flow_name, keys)
        alive = await _alive_workers(conn, {row[2] for row in rows.values() if row[1] == RUNNING})
        for key in keys:
            holder, state, holder_worker, completed_at = rows[key]
            decided[key] = await _decide(
                conn, flow_name, key, first[key], holder, state, holder_worker in alive,
                None if completed_at is None else completed_at.timestamp(),
                window_seconds, now, new,
            )  # fmt: skip
    result: dict[str, Claim] = {}
    for key, run_id in requests:
        claim = decided[key]
        if run_id != first[key] and claim.outcome == "claimed":
            claim = Claim("busy", claim.run_id)  # behind the request that won the key
        result[run_id] = claim
    return result


async def _decide(
    conn: AsyncConnection,
    flow_name: str,
    key: str,
    run_id: str,
    holder: str,
    state: str,
    holder_alive: bool,
    completed: float | None,
    window_seconds: float,
    now: float,
    new: dict[str, Any],
) -> Claim:
    if holder == run_id:
        return Claim("claimed", run_id)
    if state == RUNNING and not holder_alive:
        completed = await _completed_at(conn, holder)
        if completed is not None:
            state = COMPLETED
    if state == COMPLETED and completed is not None and completed >= now - window_seconds:
        return Claim("duplicate", holder)
    if state == RUNNING and holder_alive:
        return Claim("busy", holder)
    # expired, released, or left behind by a stopped worker: take it over, unless
    # another claimant did first (compare and set on the previous holder)
    claims = schema.idempotency_keys
    taken = await conn.execute(
        claims.update()
        .where(claims.c.flow_name == flow_name, claims.c.key == key, claims.c.run_id == holder)
        .values(run_id=run_id, **new)
    )
    if taken.rowcount == 1:
        return Claim("claimed", run_id)
    return Claim("busy", holder)


async def _rows(conn: AsyncConnection, flow_name: str, keys: list[str]) -> dict[str, Any]:
    claims = schema.idempotency_keys
    rows: dict[str, Any] = {}
    for start in range(0, len(keys), _CHUNK):
        query = sa.select(
            claims.c.key, claims.c.run_id, claims.c.state, claims.c.worker_id, claims.c.completed_at
        ).where(claims.c.flow_name == flow_name, claims.c.key.in_(keys[start : start + _CHUNK]))
        for key, *rest in (await conn.execute(query)).all():
            rows[key] = rest
    return rows


async def _alive_workers(conn: AsyncConnection, worker_ids: set[str]) -> set[str]:
    """Of `worker_ids`, those that have not stopped (registered, no `stopped_at`).

    A worker that dies is given a `stopped_at` by the crash sweep once its
    heartbeat lapses.
    """
    if not worker_ids:
        return set()
    workers = schema.workers
    query = sa.select(workers.c.id).where(
        workers.c.id.in_(sorted(worker_ids)), workers.c.stopped_at.is_(None)
    )
    return {row[0] for row in (await conn.execute(query)).all()}


async def _completed_at(conn: AsyncConnection, run_id: str) -> float | None:
    """When run `run_id` completed, if it did (its claim may not have been settled)."""
    runs = schema.flow_runs
    found = (
        await conn.execute(
            sa.select(runs.c.ended_at).where(runs.c.id == run_id, runs.c.state_type == COMPLETED)
        )
    ).first()
    return None if found is None or found[0] is None else float(found[0].timestamp())
