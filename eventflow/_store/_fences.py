"""Fences: fencing tokens that keep a worker which lost its claim from writing under it.

A fence is a scope (a worker's lease, or one partition of a consumer group)
with an epoch that grows by one each time somebody claims it. Every record
made under a claim carries its token, (scope, epoch). The writer's
transaction first reads the current epoch of each scope its batch carries
(PostgreSQL: `FOR SHARE`, so a claim waits for that transaction; SQLite: the
transaction holds the write lock from its start), and drops the records whose
token is no longer current (Kleppmann's fencing tokens). So a worker that was
frozen, cut off, or declared dead cannot write runs, task runs or offsets over
its successor's: a new owner claims a partition before it reads its offsets,
and the crash sweep moves the epoch of every scope a dead worker held.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from . import _schema as schema

if TYPE_CHECKING:
    from ._batch import Batch

logger = logging.getLogger("eventflow.store")

Token = tuple[str, int]
"""(scope, epoch): what a record made under a claim carries (`Row["fence"]`)."""


@dataclass(slots=True, eq=False)
class Fence:
    """A claim this process holds: records made under it carry `token`.

    `lost` turns True once the store refused the token (someone claimed the
    scope since, or the sweep declared its holder dead) or the worker found
    itself frozen past its lease: nothing more is done under it.
    """

    scope: str
    epoch: int
    lost: bool = False
    token: Token = field(init=False)

    def __post_init__(self) -> None:
        self.token = (self.scope, self.epoch)


class FenceWatch:
    """The writer's side of fencing: the claims whose records go through it, by token.

    A claim the store refused is marked `lost` (on the writer's thread) and
    reported to `on_refused`; a claim its owner knows to be lost (`drop_lost`)
    has its records dropped before any write.
    """

    def __init__(self) -> None:
        self._watched: dict[Token, Fence] = {}
        self._lost: set[Token] = set()
        self.on_refused: Callable[[list[Fence]], None] | None = None
        """Called on the writer's thread with the claims the store refused."""

    def watch(self, fence: Fence) -> None:
        self._watched[fence.token] = fence

    def forget(self, fence: Fence) -> None:
        self._watched.pop(fence.token, None)

    def drop_lost(self, fences: Iterable[Fence]) -> None:
        """Never write what was made under `fences`: their owner knows they are lost."""
        fences = list(fences)
        if len(self._lost) > 100_000:  # long gone claims: their records are gone too
            self._lost.clear()
        for fence in fences:
            fence.lost = True
            self._lost.add(fence.token)

    def before_commit(self, batch: Batch) -> None:
        if self._lost:
            batch.drop_fenced(self._lost & batch.fence_tokens())

    def refused(self, tokens: set[Token]) -> None:
        """The store refused `tokens`: mark their claims lost and tell the owner."""
        lost = [fence for token in tokens if (fence := self._watched.pop(token, None))]
        self._lost |= tokens
        for fence in lost:
            fence.lost = True
        logger.debug("the store refused records under %d stale fencing token(s)", len(tokens))
        if lost and self.on_refused is not None:
            try:
                self.on_refused(lost)
            except Exception:
                logger.exception("reporting lost claims failed")


def worker_scope(worker_id: str) -> str:
    return f"worker:{worker_id}"


def partition_scope(group: str, stream: str, partition: int, flow: str) -> str:
    """A consumer group's partition, as read into `flow` (JSON: names may hold any
    character). Per flow: two subscriptions of one group and topic do not fence
    each other."""
    return "partition:" + orjson.dumps([group, stream, partition, flow]).decode()


def is_worker_scope(scope: str) -> bool:
    return scope.startswith("worker:")


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def claim(conn: AsyncConnection, scopes: Iterable[str], holder: str) -> dict[str, int]:
    """Claim `scopes` for `holder` in the caller's transaction: each one's epoch grows
    by one; the new epochs. In scope order, so two claimants never wait for each
    other in a cycle."""
    fences = schema.fences
    insert = _insert(conn)
    now = time.time()
    epochs: dict[str, int] = {}
    for scope in sorted(set(scopes)):
        statement = (
            insert(fences)
            .values(scope=scope, epoch=1, holder=holder, updated_at=now)
            .on_conflict_do_update(
                index_elements=[fences.c.scope],
                set_={"epoch": fences.c.epoch + 1, "holder": holder, "updated_at": now},
            )
            .returning(fences.c.epoch)
        )
        epochs[scope] = int((await conn.execute(statement)).scalar_one())
    return epochs


async def register_worker(conn: AsyncConnection, row: Mapping[str, Any]) -> int:
    """Write the worker's row as alive and claim its lease, in the caller's transaction;
    the lease's epoch (what the worker's records carry from then on)."""
    workers = schema.workers
    values = {key: value for key, value in row.items() if key in workers.c}
    values["stopped_at"] = None
    statement = (
        _insert(conn)(workers)
        .values(values)
        .on_conflict_do_update(
            index_elements=[workers.c.id],
            set_={"heartbeat_at": values["heartbeat_at"], "stopped_at": None},
        )
    )
    await conn.execute(statement)
    scope = worker_scope(row["id"])
    return (await claim(conn, [scope], row["id"]))[scope]


async def release(conn: AsyncConnection, holders: Sequence[str], now: float) -> None:
    """Move the epoch of every scope `holders` hold: their tokens are stale from then on.

    Call it first in its transaction: it locks those fences before any run row, in
    the order the writer's transactions lock them, so neither waits for the other
    in a cycle (a deadlock PostgreSQL would break by failing one).
    """
    fences = schema.fences
    held = fences.c.holder.in_(list(holders))
    await conn.execute(
        sa.select(fences.c.scope).where(held).order_by(fences.c.scope).with_for_update()
    )
    await conn.execute(
        fences.update().where(held).values(epoch=fences.c.epoch + 1, holder=None, updated_at=now)
    )


async def read(conn: AsyncConnection, scopes: Sequence[str]) -> dict[str, tuple[int, str | None]]:
    """Each scope's current epoch and holder (None: released by the crash sweep)."""
    fences = schema.fences
    query = sa.select(fences.c.scope, fences.c.epoch, fences.c.holder).where(
        fences.c.scope.in_(list(scopes))
    )
    return {scope: (int(epoch), holder) for scope, epoch, holder in await conn.execute(query)}


def stale(current: Iterable[tuple[str, int]], tokens: Iterable[Token]) -> set[Token]:
    """Of `tokens`, those whose epoch is not the scope's `current` one (or that has none)."""
    epochs = dict(current)
    return {token for token in tokens if epochs.get(token[0]) != token[1]}


_CURRENT = sa.select(schema.fences.c.scope, schema.fences.c.epoch)


def stale_tokens_sqlite(conn: sa.Connection, tokens: set[Token]) -> set[Token]:
    """`tokens` no longer current, read in the caller's transaction (which holds
    SQLite's write lock from its start: `BEGIN IMMEDIATE`, see _engine.py)."""
    scopes = sorted({scope for scope, _ in tokens})
    rows = conn.execute(_CURRENT.where(schema.fences.c.scope.in_(scopes))).all()
    return stale(((s, e) for s, e in rows), tokens)


STALE_TOKENS_POSTGRES = (
    "SELECT scope, epoch FROM fences WHERE scope = ANY($1::text[]) ORDER BY scope FOR SHARE"
)
"""The current epochs, locked until the writer's transaction ends: a claim of one
of these scopes waits for it, then sees what it wrote."""
