"""Lineage in the store: declarations, freshness, and the late/fresh transitions.

Any worker (and the server, the CLI) can evaluate it: everything lives in
the `datasets` and `lineage_edges` tables. A dataset's `due_at` is when its
next event or write is due; it is late once that has passed. The notices are
sent by whoever wins `turn_late` / `turn_fresh`: one guarded UPDATE of one row,
so several workers evaluating at once, or a worker restarted, send one notice
per transition, not one each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._datasets import kind_of
from .._lineage import Dataset, Edge, Graph
from . import _schema as schema

DueRule = Callable[[float | None, float], float | None]
"""(last event or write, declared at) -> when the next is due, or None (never late)."""


@dataclass(frozen=True, slots=True)
class Declared:
    """A dataset as one worker declares it, with its expectation if it has one."""

    name: str
    expect_seconds: float | None = None
    due: DueRule | None = None
    """How `due_at` follows from the last event (default: `last + expect_seconds`)."""

    def due_at(self, last_at: float | None, declared_at: float) -> float | None:
        if self.due is not None:
            return self.due(last_at, declared_at)
        if self.expect_seconds is None:
            return None
        return (declared_at if last_at is None else last_at) + self.expect_seconds


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


async def declare(
    engine: AsyncEngine, datasets: Iterable[Declared], edges: Iterable[Edge], flows: Iterable[str]
) -> None:
    """Record the datasets (kept; an expectation replaces the one stored) and replace the
    edges of `flows` with `edges`."""
    now = time.time()
    table = schema.datasets
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    async with engine.begin() as conn:
        for d in datasets:
            await conn.execute(
                insert(table)
                .values(
                    name=d.name,
                    kind=kind_of(d.name),
                    expect_seconds=d.expect_seconds,
                    due_at=d.due_at(None, now),
                    declared_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[table.c.name])
            )
            if d.expect_seconds is None and d.due is None:
                continue  # a declaration without expectation leaves the stored one
            row = (
                await conn.execute(
                    sa.select(table.c.last_at, table.c.declared_at).where(table.c.name == d.name)
                )
            ).one()
            due = d.due_at(_epoch(row.last_at), _epoch(row.declared_at) or now)
            await conn.execute(
                table.update()
                .where(table.c.name == d.name)
                .values(expect_seconds=d.expect_seconds, due_at=due, updated_at=now)
            )
        names = sorted(set(flows))
        if names:
            await conn.execute(
                schema.lineage_edges.delete().where(schema.lineage_edges.c.flow_name.in_(names))
            )
        await _add_edges(conn, edges, now)


async def add_edges(engine: AsyncEngine, edges: Iterable[Edge]) -> None:
    """Add edges found at run time (a sink's topic), datasets included, keeping the rest."""
    now = time.time()
    async with engine.begin() as conn:
        await _add_edges(conn, edges, now)


async def _add_edges(conn: AsyncConnection, edges: Iterable[Edge], now: float) -> None:
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    for edge in edges:
        await conn.execute(
            insert(schema.datasets)
            .values(
                name=edge.dataset,
                kind=kind_of(edge.dataset),
                declared_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[schema.datasets.c.name])
        )
        await conn.execute(
            insert(schema.lineage_edges)
            .values(
                flow_name=edge.flow, dataset=edge.dataset, direction=edge.direction, declared_at=now
            )
            .on_conflict_do_nothing()
        )


async def touch(engine: AsyncEngine, name: str, at: float, due: DueRule | None = None) -> bool:
    """An event or write at `at` (epoch seconds): moves `last_at` (never back) and `due_at`
    (by `due`, else by the stored expectation)."""
    table = schema.datasets
    async with engine.begin() as conn:
        row = (
            await conn.execute(
                sa.select(table.c.last_at, table.c.expect_seconds, table.c.declared_at).where(
                    table.c.name == name
                )
            )
        ).one_or_none()
        if row is None or (row.last_at is not None and row.last_at.timestamp() >= at):
            return False
        if due is not None:
            due_at = due(at, _epoch(row.declared_at) or at)
        else:
            due_at = None if row.expect_seconds is None else at + row.expect_seconds
        done = await conn.execute(
            table.update()
            .where(table.c.name == name, sa.or_(table.c.last_at.is_(None), table.c.last_at < at))
            .values(last_at=at, due_at=due_at, updated_at=time.time())
        )
        return done.rowcount == 1


async def load(engine: AsyncEngine) -> Graph:
    """The graph as stored (written datasets' last writes not refreshed: see `refreshed`)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(schema.datasets))).all()
        edges = (await conn.execute(sa.select(schema.lineage_edges))).all()
    return Graph(
        datasets={
            r.name: Dataset(
                name=r.name,
                kind=r.kind,
                expect_seconds=r.expect_seconds,
                last_at=_epoch(r.last_at),
                due_at=_epoch(r.due_at),
                declared_at=_epoch(r.declared_at) or 0.0,
                late_since=_epoch(r.late_since),
            )
            for r in rows
        },
        edges=[Edge(e.flow_name, e.dataset, e.direction) for e in edges],
    )


async def last_completions(engine: AsyncEngine, flows: Iterable[str]) -> dict[str, float]:
    """When each flow's latest completed run ended (the index by flow and creation time)."""
    runs = schema.flow_runs
    found: dict[str, float] = {}
    async with engine.connect() as conn:
        for name in sorted(set(flows)):
            ended = (
                await conn.execute(
                    sa.select(runs.c.ended_at)
                    .where(runs.c.flow_name == name, runs.c.state_type == "COMPLETED")
                    .order_by(runs.c.created_at.desc())
                    .limit(1)
                )
            ).scalar()
            if ended is not None:
                found[name] = ended.timestamp()
    return found


async def last_scheduled(engine: AsyncEngine, flow: str, stream: str) -> float | None:
    """The scheduled time of the latest completed run of `flow` fired by `stream`."""
    runs = schema.flow_runs
    async with engine.connect() as conn:
        value = (
            await conn.execute(
                sa.select(runs.c.event_time)
                .where(
                    runs.c.flow_name == flow,
                    runs.c.event_source == stream,
                    runs.c.state_type == "COMPLETED",
                )
                .order_by(runs.c.created_at.desc())
                .limit(1)
            )
        ).scalar()
    return _epoch(value)


async def refreshed(engine: AsyncEngine, *, persist: bool) -> Graph:
    """The graph with each written dataset's last write from its writers' completed runs.

    A write is a completed run of a flow that writes the dataset. With `persist`
    (a worker's evaluation) the newer times are stored; a reader (API, CLI)
    only shows them.
    """
    graph = await load(engine)
    writers: dict[str, list[str]] = {}
    for edge in graph.edges:
        if edge.direction == "writes":
            writers.setdefault(edge.dataset, []).append(edge.flow)
    if not writers:
        return graph
    ended = await last_completions(engine, {f for names in writers.values() for f in names})
    for name, flows in writers.items():
        dataset = graph.datasets.get(name)
        wrote = max((ended[f] for f in flows if f in ended), default=None)
        if dataset is None or wrote is None or dataset.kind == "schedule":
            continue
        if dataset.last_at is not None and dataset.last_at >= wrote:
            continue
        due = dataset.due_at if dataset.expect_seconds is None else wrote + dataset.expect_seconds
        graph.datasets[name] = replace(dataset, last_at=wrote, due_at=due)
        if persist:
            await touch(engine, name, wrote)
    return graph


async def turn_late(engine: AsyncEngine, name: str, now: float) -> bool:
    """True for the one caller that marks `name` late (a notice to send)."""
    table = schema.datasets
    async with engine.begin() as conn:
        done = await conn.execute(
            table.update()
            .where(table.c.name == name, table.c.late_since.is_(None), table.c.due_at < now)
            .values(late_since=now)
        )
        return done.rowcount == 1


async def turn_fresh(engine: AsyncEngine, name: str, now: float) -> bool:
    """True for the one caller that marks `name` fresh again after a late notice."""
    table = schema.datasets
    async with engine.begin() as conn:
        done = await conn.execute(
            table.update()
            .where(
                table.c.name == name,
                table.c.late_since.is_not(None),
                sa.or_(table.c.due_at.is_(None), table.c.due_at >= now),
            )
            .values(late_since=None)
        )
        return done.rowcount == 1
