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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._datasets import kind_of
from .._lineage import Dataset, Edge, Graph
from . import _schema as schema

DueRule = Callable[[float | None, float], float | None]
"""(last event or write, declared at) -> when the next is due, or None (never late)."""


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


async def declare(
    engine: AsyncEngine,
    edges: Iterable[Edge],
    flows: Iterable[str],
    rules: Mapping[str, DueRule | None] | None = None,
) -> None:
    """Replace the edges of `flows` with `edges` (their datasets recorded if new).

    `rules` holds the schedules this worker fires: each one's deadline rule
    (None: it has none), which sets its `due_at`.
    """
    now = time.time()
    table = schema.datasets
    async with engine.begin() as conn:
        names = sorted(set(flows))
        if names:
            await conn.execute(
                schema.lineage_edges.delete().where(schema.lineage_edges.c.flow_name.in_(names))
            )
        await _add_edges(conn, edges, now)
        for name, rule in (rules or {}).items():
            row = (
                await conn.execute(
                    sa.select(table.c.last_at, table.c.declared_at).where(table.c.name == name)
                )
            ).one_or_none()
            if row is None:
                continue
            due = (
                None if rule is None else rule(_epoch(row.last_at), _epoch(row.declared_at) or now)
            )
            await conn.execute(table.update().where(table.c.name == name).values(due_at=due))


async def add_edges(engine: AsyncEngine, edges: Iterable[Edge]) -> None:
    """Add edges found at run time (a sink's topic), datasets included, keeping the rest."""
    now = time.time()
    async with engine.begin() as conn:
        await _add_edges(conn, edges, now)


async def _add_edges(conn: AsyncConnection, edges: Iterable[Edge], now: float) -> None:
    insert = _insert(conn)
    for edge in edges:
        await conn.execute(
            insert(schema.datasets)
            .values(name=edge.dataset, kind=kind_of(edge.dataset), declared_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=[schema.datasets.c.name])
        )
        await conn.execute(
            insert(schema.lineage_edges)
            .values(
                flow_name=edge.flow,
                dataset=edge.dataset,
                direction=edge.direction,
                declared_at=now,
                expect_seconds=edge.expect_seconds,
            )
            .on_conflict_do_nothing()
        )


async def touch(engine: AsyncEngine, name: str, at: float, due: DueRule | None = None) -> bool:
    """An event or write at `at` (epoch seconds): moves `last_at`, never back (and a
    schedule's `due_at` by its rule)."""
    table = schema.datasets
    values: dict[str, Any] = {"last_at": at, "updated_at": time.time()}
    async with engine.begin() as conn:
        if due is not None:
            declared = (
                await conn.execute(sa.select(table.c.declared_at).where(table.c.name == name))
            ).scalar()
            values["due_at"] = due(at, _epoch(declared) or at)
        done = await conn.execute(
            table.update()
            .where(table.c.name == name, sa.or_(table.c.last_at.is_(None), table.c.last_at < at))
            .values(**values)
        )
        return done.rowcount == 1


async def load(engine: AsyncEngine) -> Graph:
    """The graph as stored (written datasets' last writes not refreshed: see `refreshed`).

    A dataset no edge names any more (no flow reads or writes it) is left out.
    Its expectation is the shortest of its edges'; it is due that long after
    its last event or write (after its declaration, before the first), a
    schedule with a deadline by the `due_at` its worker set.
    """
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(schema.datasets))).all()
        stored = (await conn.execute(sa.select(schema.lineage_edges))).all()
    edges = [Edge(e.flow_name, e.dataset, e.direction, e.expect_seconds) for e in stored]
    expect: dict[str, float | None] = {}
    for edge in edges:
        if edge.expect_seconds is not None:
            known = expect.get(edge.dataset)
            expect[edge.dataset] = min(edge.expect_seconds, known or edge.expect_seconds)
        else:
            expect.setdefault(edge.dataset, None)
    datasets = {}
    for r in rows:
        if r.name not in expect:
            continue
        seconds = expect[r.name]
        last_at, declared_at = _epoch(r.last_at), _epoch(r.declared_at) or 0.0
        due = _epoch(r.due_at)
        if seconds is None:
            due = None
        elif due is None:
            due = (declared_at if last_at is None else last_at) + seconds
        datasets[r.name] = Dataset(
            name=r.name,
            kind=r.kind,
            expect_seconds=seconds,
            last_at=last_at,
            due_at=due,
            declared_at=declared_at,
            late_since=_epoch(r.late_since),
        )
    return Graph(datasets=datasets, edges=edges)


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
        due = dataset.due_at
        if dataset.expect_seconds is not None and dataset.kind != "schedule":
            due = wrote + dataset.expect_seconds
        graph.datasets[name] = replace(dataset, last_at=wrote, due_at=due)
        if persist:
            await touch(engine, name, wrote)
    return graph


async def turn_late(engine: AsyncEngine, name: str, now: float) -> bool:
    """True for the one caller that marks `name` late (a notice to send), of any number
    of workers that found it late at once."""
    table = schema.datasets
    async with engine.begin() as conn:
        done = await conn.execute(
            table.update()
            .where(table.c.name == name, table.c.late_since.is_(None))
            .values(late_since=now)
        )
        return done.rowcount == 1


async def turn_fresh(engine: AsyncEngine, name: str, now: float) -> bool:
    """True for the one caller that marks `name` fresh again after a late notice."""
    table = schema.datasets
    async with engine.begin() as conn:
        done = await conn.execute(
            table.update()
            .where(table.c.name == name, table.c.late_since.is_not(None))
            .values(late_since=None)
        )
        return done.rowcount == 1
