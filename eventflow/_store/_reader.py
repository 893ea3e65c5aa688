"""Read queries over the run store, shared by the CLI and the REST API (the dashboard's
aggregates are in `_dashboard_queries`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import StoreError
from .._states import FINAL_STATE_TYPES
from . import _schema as schema
from ._engine import make_engine

_HEX = re.compile("[0-9a-f]+")

RUN_LIST_COLUMNS = [
    c
    for c in schema.flow_runs.c
    if c.name not in ("event_payload", "parameters", "result", "traceback")
]


def epoch_seconds(column: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """A timestamp column as epoch seconds, on either database."""
    if dialect == "postgresql":
        return sa.extract("epoch", column)
    return sa.type_coerce(column, sa.Float)  # SQLite stores epoch seconds


def time_bucket(column: sa.ColumnElement[Any], seconds: int, dialect: str) -> sa.ColumnElement[Any]:
    """The number of the `seconds`-wide bucket, aligned to the epoch, a time falls in."""
    if dialect == "postgresql":
        return sa.func.floor(epoch_seconds(column, dialect) / seconds)
    # SQLite: for positive times the cast is a floor
    return sa.cast(epoch_seconds(column, dialect) / seconds, sa.Integer)


class RunNotFoundError(StoreError, LookupError):
    """No flow run has the id (or id suffix) that was asked for."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    """Which runs a listing finds (None: any), as the API, the UI and the CLI ask."""

    flow: str | None = None
    state: str | None = None
    event_key: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def where(self, *, sqlite: bool) -> list[sa.ColumnElement[bool]]:
        """The WHERE clauses.

        SQLite keeps times as float seconds, finer than the microseconds a read
        returns (rounded to the nearest); the bounds move back half a microsecond
        so that `since`/`until` equal to a time that was read include/exclude it.
        """
        runs = schema.flow_runs
        clauses: list[sa.ColumnElement[bool]] = []
        if self.flow is not None:
            clauses.append(runs.c.flow_name == self.flow)
        if self.state is not None:
            # inline, so the planner can match the partial index of states other than COMPLETED
            clauses.append(
                runs.c.state_type == sa.literal(self.state.upper(), literal_execute=True)
            )
        if self.event_key is not None:
            clauses.append(runs.c.event_key == self.event_key)
        if self.since is not None:
            since = self.since
            clauses.append(runs.c.created_at >= (since.timestamp() - 5e-7 if sqlite else since))
        if self.until is not None:
            until = self.until
            clauses.append(runs.c.created_at < (until.timestamp() - 5e-7 if sqlite else until))
        return clauses


_ANY_RUN = RunFilter()


def _id_part(run_id: str) -> sa.ColumnElement[bool]:
    """Ids that start or end with `run_id`.

    PostgreSQL finds both by index: a prefix as a range of the primary key
    (ids are lowercase hex, and `g` sorts after every hex digit in any
    collation), a suffix as a prefix of `reverse(id)` (ix_flow_runs_id_reversed,
    a `text_pattern_ops` index: the pattern must be a literal the planner sees).
    """
    runs = schema.flow_runs
    if not _HEX.fullmatch(run_id):
        return sa.false()
    return sa.or_(
        sa.and_(runs.c.id >= run_id, runs.c.id < run_id + "g"),
        sa.func.reverse(runs.c.id).like(sa.literal(run_id[::-1] + "%", literal_execute=True)),
    )


def _id_part_sqlite(run_id: str) -> sa.ColumnElement[bool]:
    runs = schema.flow_runs
    return sa.or_(
        runs.c.id.startswith(run_id, autoescape=True), runs.c.id.endswith(run_id, autoescape=True)
    )


_RUN_LINKS = ("retry_of", "resumed_from", "linked_run_id", "parent_flow_run_id")
"""The columns of a flow run that name another flow run."""


class RunReader:
    """Async read access to the store; one engine, opened on first use."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._engine: AsyncEngine | None = None

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self._engine = make_engine(self.database_url)
        return self._engine

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None

    async def list_flows(self) -> list[dict[str, Any]]:
        runs = schema.flow_runs
        counts = sa.select(
            runs.c.flow_name,
            runs.c.state_type,
            sa.func.count().label("count"),
            sa.func.max(runs.c.created_at).label("last_run_at"),
        ).group_by(runs.c.flow_name, runs.c.state_type)
        async with self.engine.connect() as conn:
            flows = (
                (await conn.execute(sa.select(schema.flows).order_by(schema.flows.c.name)))
                .mappings()
                .all()
            )
            rows = (await conn.execute(counts)).all()
        result: dict[str, dict[str, Any]] = {
            f["name"]: {**f, "runs": 0, "states": {}, "last_run_at": None} for f in flows
        }
        for flow_name, state_type, count, last_run_at in rows:
            entry = result.setdefault(
                flow_name,
                {
                    "name": flow_name,
                    "version": None,
                    "created_at": None,
                    "runs": 0,
                    "states": {},
                    "last_run_at": None,
                },
            )
            entry["runs"] += count
            entry["states"][state_type] = count
            if entry["last_run_at"] is None or (last_run_at and last_run_at > entry["last_run_at"]):
                entry["last_run_at"] = last_run_at
        return list(result.values())

    async def list_flow_runs(
        self, matching: RunFilter = _ANY_RUN, *, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """Newest first, those `matching` finds."""
        runs = schema.flow_runs
        query = (
            sa.select(*RUN_LIST_COLUMNS)
            .where(*matching.where(sqlite=self._sqlite))
            .order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        async with self.engine.connect() as conn:
            return await rows_of(conn, query)

    async def count_flow_runs(self, matching: RunFilter = _ANY_RUN) -> int:
        """How many runs `list_flow_runs(matching)` would find with no limit."""
        query = (
            sa.select(sa.func.count())
            .select_from(schema.flow_runs)
            .where(*matching.where(sqlite=self._sqlite))
        )
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def count_flow_runs_by_state(self, matching: RunFilter = _ANY_RUN) -> dict[str, int]:
        """Runs per state type that `list_flow_runs(matching)` would find, its state aside."""
        runs = schema.flow_runs
        query = (
            sa.select(runs.c.state_type, sa.func.count())
            .where(*replace(matching, state=None).where(sqlite=self._sqlite))
            .group_by(runs.c.state_type)
        )
        async with self.engine.connect() as conn:
            return {str(state): int(n) for state, n in (await conn.execute(query)).all()}

    async def resolve_run_id(self, run_id: str) -> str:
        """A full run id from a full id or a unique prefix or suffix (as the CLI prints them)."""
        runs = schema.flow_runs
        async with self.engine.connect() as conn:
            exact = (await conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id))).scalar()
            if exact is not None:
                return str(exact)
            if len(run_id) < 4:
                raise RunNotFoundError(f"no flow run {run_id!r}")
            id_part = _id_part_sqlite if self._sqlite else _id_part
            matches = (
                (await conn.execute(sa.select(runs.c.id).where(id_part(run_id)).limit(2)))
                .scalars()
                .all()
            )
        if not matches:
            raise RunNotFoundError(f"no flow run {run_id!r}")
        if len(matches) > 1:
            raise RunNotFoundError(
                f"{run_id!r} matches more than one flow run; give more of the id"
            )
        return str(matches[0])

    async def get_flow_run(self, run_id: str) -> dict[str, Any]:
        """One flow run with its task runs, graph edges and logs."""
        run_id = await self.resolve_run_id(run_id)
        runs, tasks, edges, logs = (
            schema.flow_runs,
            schema.task_runs,
            schema.task_run_edges,
            schema.logs,
        )
        async with self.engine.connect() as conn:
            found = await rows_of(conn, sa.select(runs).where(runs.c.id == run_id))
            task_runs = await rows_of(
                conn,
                sa.select(tasks)
                .where(tasks.c.flow_run_id == run_id)
                .order_by(tasks.c.created_at, tasks.c.id),
            )
            edge_rows = await rows_of(conn, sa.select(edges).where(edges.c.flow_run_id == run_id))
            log_rows = await rows_of(
                conn,
                sa.select(logs)
                .where(logs.c.flow_run_id == run_id)
                .order_by(logs.c.timestamp, logs.c.id),
            )
            pruned: list[str] = []
            reused = [t["reused_from"] for t in task_runs if t["reused_from"] is not None]
            if reused:  # the runs they came from, for a link
                sources = await rows_of(
                    conn,
                    sa.select(tasks.c.id, tasks.c.flow_run_id).where(tasks.c.id.in_(reused)),
                )
                run_of = {s["id"]: s["flow_run_id"] for s in sources}
                for t in task_runs:
                    t["reused_from_run"] = run_of.get(t["reused_from"])
                pruned += sorted(set(reused) - set(run_of))
            (result,) = found
            linked = {result[c] for c in _RUN_LINKS if result[c] is not None}
            if linked:  # retention may have deleted them: no link to follow
                kept = (
                    await conn.execute(sa.select(runs.c.id).where(runs.c.id.in_(linked)))
                ).scalars()
                pruned += sorted(linked - set(kept))
        result["task_runs"] = task_runs
        result["edges"] = edge_rows
        result["logs"] = log_rows
        result["pruned"] = pruned
        return result

    async def last_runs(self) -> dict[str, dict[str, Any]]:
        """The newest run of every flow, by flow name (one index probe per flow)."""
        runs, flows = schema.flow_runs, schema.flows
        newest = runs.alias("newest")
        newest_id = (
            sa.select(newest.c.id)
            .where(newest.c.flow_name == flows.c.name)
            .order_by(newest.c.created_at.desc(), newest.c.id.desc())
            .limit(1)
            .scalar_subquery()
        )
        query = sa.select(*RUN_LIST_COLUMNS).where(
            runs.c.id.in_(sa.select(newest_id).select_from(flows))
        )
        async with self.engine.connect() as conn:
            return {row["flow_name"]: dict(row) for row in (await conn.execute(query)).mappings()}

    async def final_state_histogram(
        self, *, flow: str | None, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[tuple[float, str, int]]:
        """Runs that ended in `[since, until)`: (bucket start, epoch seconds; state type; count).

        Buckets are `bucket_seconds` wide and aligned to the epoch, so the same
        run always falls in the same bucket whatever range is asked for.
        """
        runs = schema.flow_runs
        bucket = time_bucket(runs.c.ended_at, bucket_seconds, self.engine.dialect.name)
        query = (
            sa.select(bucket.label("bucket"), runs.c.state_type, sa.func.count())
            .where(
                runs.c.ended_at >= since,
                runs.c.ended_at < until,
                runs.c.state_type.in_(FINAL_STATE_TYPES),
            )
            .group_by(bucket, runs.c.state_type)
        )
        if flow is not None:
            query = query.where(runs.c.flow_name == flow)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(float(b) * bucket_seconds, str(s), int(n)) for b, s, n in rows]

    async def list_workers(self) -> list[dict[str, Any]]:
        """Every worker the store knows of, newest first, with its runs in flight."""
        workers, runs = schema.workers, schema.flow_runs
        in_flight = (
            sa.select(runs.c.worker_id, sa.func.count().label("runs_in_flight"))
            .where(runs.c.worker_id.is_not(None), sa.text(schema.ACTIVE))
            .group_by(runs.c.worker_id)
            .subquery()
        )
        query = (
            sa.select(
                workers, sa.func.coalesce(in_flight.c.runs_in_flight, 0).label("runs_in_flight")
            )
            .outerjoin(in_flight, in_flight.c.worker_id == workers.c.id)
            .order_by(workers.c.started_at.desc(), workers.c.id)
        )
        async with self.engine.connect() as conn:
            return await rows_of(conn, query)

    async def list_source_status(self, *, alive_since: datetime) -> list[dict[str, Any]]:
        """Subscriptions' status rows of the workers that heartbeat since `alive_since`."""
        status, workers = schema.source_status, schema.workers
        query = (
            sa.select(status)
            .join(workers, workers.c.id == status.c.worker_id)
            .where(workers.c.stopped_at.is_(None), workers.c.heartbeat_at >= alive_since)
            .order_by(status.c.subscription, status.c.worker_id)
        )
        async with self.engine.connect() as conn:
            return await rows_of(conn, query)

    async def list_replays(self, run_id: str) -> list[dict[str, Any]]:
        """Runs asked for as retries of `run_id` (a full id), oldest first."""
        runs = schema.flow_runs
        query = (
            sa.select(*RUN_LIST_COLUMNS)
            .where(runs.c.retry_of == run_id)
            .order_by(runs.c.created_at, runs.c.id)
        )
        async with self.engine.connect() as conn:
            return await rows_of(conn, query)

    async def run_inputs(self, run_ids: list[str]) -> dict[str, tuple[str | None, bytes | None]]:
        """The stored parameters and event payload of each run, by id."""
        if not run_ids:
            return {}
        runs = schema.flow_runs
        query = sa.select(runs.c.id, runs.c.parameters, runs.c.event_payload).where(
            runs.c.id.in_(run_ids)
        )
        async with self.engine.connect() as conn:
            return {row[0]: (row[1], row[2]) for row in (await conn.execute(query)).all()}


async def rows_of(conn: AsyncConnection, query: sa.Executable) -> list[dict[str, Any]]:
    """The rows `query` returns, as plain dicts."""
    return [dict(row) for row in (await conn.execute(query)).mappings()]
