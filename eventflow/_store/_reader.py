"""Read queries over the run store, shared by the CLI and the REST API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import StoreError
from . import _schema as schema
from ._engine import make_engine

_RUN_LIST_COLUMNS = [
    c for c in schema.flow_runs.c if c.name not in ("event_payload", "parameters", "result")
]


class RunNotFoundError(StoreError, LookupError):
    """No flow run has the id (or id suffix) that was asked for."""


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
        self,
        *,
        flow: str | None = None,
        state: str | None = None,
        event_key: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Newest first, filtered by flow name, state type, event key and creation time."""
        runs = schema.flow_runs
        query = sa.select(*_RUN_LIST_COLUMNS)
        if flow is not None:
            query = query.where(runs.c.flow_name == flow)
        if state is not None:
            query = query.where(runs.c.state_type == state.upper())
        if event_key is not None:
            query = query.where(runs.c.event_key == event_key)
        if since is not None:
            query = query.where(runs.c.created_at >= since)
        if until is not None:
            query = query.where(runs.c.created_at < until)
        query = (
            query.order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit).offset(offset)
        )
        async with self.engine.connect() as conn:
            return [dict(row) for row in (await conn.execute(query)).mappings()]

    async def count_flow_runs(self, *, flow: str | None = None, state: str | None = None) -> int:
        runs = schema.flow_runs
        query = sa.select(sa.func.count()).select_from(runs)
        if flow is not None:
            query = query.where(runs.c.flow_name == flow)
        if state is not None:
            query = query.where(runs.c.state_type == state.upper())
        async with self.engine.connect() as conn:
            return int((await conn.execute(query)).scalar_one())

    async def resolve_run_id(self, run_id: str) -> str:
        """A full run id from a full id or a unique prefix or suffix (as the CLI prints them)."""
        runs = schema.flow_runs
        async with self.engine.connect() as conn:
            exact = (await conn.execute(sa.select(runs.c.id).where(runs.c.id == run_id))).scalar()
            if exact is not None:
                return str(exact)
            if len(run_id) < 4:
                raise RunNotFoundError(f"no flow run {run_id!r}")
            matches = (
                (
                    await conn.execute(
                        sa.select(runs.c.id)
                        .where(sa.or_(runs.c.id.startswith(run_id), runs.c.id.endswith(run_id)))
                        .limit(2)
                    )
                )
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
        async with self.engine.connect() as conn:
            run = (
                (
                    await conn.execute(
                        sa.select(schema.flow_runs).where(schema.flow_runs.c.id == run_id)
                    )
                )
                .mappings()
                .one()
            )
            task_runs = (
                (
                    await conn.execute(
                        sa.select(schema.task_runs)
                        .where(schema.task_runs.c.flow_run_id == run_id)
                        .order_by(schema.task_runs.c.created_at, schema.task_runs.c.id)
                    )
                )
                .mappings()
                .all()
            )
            edges = (
                (
                    await conn.execute(
                        sa.select(schema.task_run_edges).where(
                            schema.task_run_edges.c.flow_run_id == run_id
                        )
                    )
                )
                .mappings()
                .all()
            )
            logs = (
                (
                    await conn.execute(
                        sa.select(schema.logs)
                        .where(schema.logs.c.flow_run_id == run_id)
                        .order_by(schema.logs.c.timestamp, schema.logs.c.id)
                    )
                )
                .mappings()
                .all()
            )
        result = dict(run)
        result["task_runs"] = [dict(t) for t in task_runs]
        result["edges"] = [dict(e) for e in edges]
        result["logs"] = [dict(entry) for entry in logs]
        return result
