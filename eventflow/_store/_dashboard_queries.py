"""The dashboard's and the subscription page's aggregates: runs per bucket, durations,
events per source, a subscription's status and dead letters. Only those pages ask them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .._states import FINAL_STATE_TYPES
from . import _schema as schema
from ._reader import RUN_LIST_COLUMNS, epoch_seconds, rows_of, time_bucket


class DashboardQueries:
    """Read-only aggregates over one engine (the `OperatorStore`'s)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name

    async def created_histogram_by_flow(
        self, *, since: datetime, until: datetime, bucket_seconds: int
    ) -> list[tuple[float, str, str, int]]:
        """Runs created in `[since, until)`: (bucket start; flow; state type; count).

        By creation time, not end time: the range then reads the `created_at`
        index, so a dashboard left open costs the store one hour's rows a refresh.
        """
        runs = schema.flow_runs
        bucket = time_bucket(runs.c.created_at, bucket_seconds, self._dialect)
        query = (
            sa.select(bucket, runs.c.flow_name, runs.c.state_type, sa.func.count())
            .where(runs.c.created_at >= since, runs.c.created_at < until)
            .group_by(bucket, runs.c.flow_name, runs.c.state_type)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(float(b) * bucket_seconds, str(f), str(s), int(n)) for b, f, s, n in rows]

    async def count_active_runs(self) -> dict[str, int]:
        """Runs now pending, running or retrying, per state type (read from an index)."""
        runs = schema.flow_runs
        query = (
            sa.select(runs.c.state_type, sa.func.count())
            # both predicates: the second lets the planner use the partial state index
            .where(sa.text(schema.ACTIVE), sa.text(schema.NOT_COMPLETED))
            .group_by(runs.c.state_type)
        )
        async with self._engine.connect() as conn:
            return {str(state): int(n) for state, n in (await conn.execute(query)).all()}

    async def newest_durations(
        self, *, since: datetime, until: datetime, limit: int
    ) -> list[float]:
        """Durations in seconds of the newest `limit` finished runs created in `[since, until)`."""
        runs = schema.flow_runs
        duration = epoch_seconds(runs.c.ended_at, self._dialect) - epoch_seconds(
            runs.c.started_at, self._dialect
        )
        query = (
            sa.select(duration)
            .where(
                runs.c.created_at >= since,
                runs.c.created_at < until,
                runs.c.state_type.in_(FINAL_STATE_TYPES),
                runs.c.started_at.is_not(None),
                runs.c.ended_at.is_not(None),
            )
            .order_by(runs.c.created_at.desc())
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [max(0.0, float(d)) for d in (await conn.execute(query)).scalars()]

    async def events_by_source(
        self, *, since: datetime, until: datetime
    ) -> dict[tuple[str, str], int]:
        """Runs created for an event in `[since, until)`, by (event source, flow)."""
        runs = schema.flow_runs
        query = (
            sa.select(runs.c.event_source, runs.c.flow_name, sa.func.count())
            .where(
                runs.c.event_source.is_not(None),
                runs.c.created_at >= since,
                runs.c.created_at < until,
            )
            .group_by(runs.c.event_source, runs.c.flow_name)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(str(source), str(flow)): int(n) for source, flow, n in rows}

    async def subscription_status(self, subscription: str) -> list[dict[str, Any]]:
        """A subscription's status rows of every worker, with the worker's liveness columns."""
        status, workers = schema.source_status, schema.workers
        query = (
            sa.select(status, workers.c.heartbeat_at, workers.c.stopped_at)
            .join(workers, workers.c.id == status.c.worker_id)
            .where(status.c.subscription == subscription)
            .order_by(status.c.worker_id)
        )
        async with self._engine.connect() as conn:
            return await rows_of(conn, query)

    async def events_histogram(
        self,
        *,
        streams: list[str],
        flow: str,
        since: datetime,
        until: datetime,
        bucket_seconds: int,
    ) -> list[tuple[float, int]]:
        """Runs of `flow` created for events of `streams` (topics, or the source's name),
        per bucket: (bucket start; count)."""
        runs = schema.flow_runs
        bucket = time_bucket(runs.c.created_at, bucket_seconds, self._dialect)
        query = (
            sa.select(bucket, sa.func.count())
            .where(
                runs.c.event_source.in_(streams),
                runs.c.flow_name == flow,
                runs.c.created_at >= since,
                runs.c.created_at < until,
            )
            .group_by(bucket)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [(float(b) * bucket_seconds, int(n)) for b, n in rows]

    async def failed_events(
        self, *, streams: list[str], flow: str, limit: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """FAILED runs of `flow` for events of `streams` (what the default policy
        dead-letters): how many, and the newest `limit` with their payload."""
        runs = schema.flow_runs
        where = (
            runs.c.event_source.in_(streams),
            runs.c.flow_name == flow,
            runs.c.state_type == "FAILED",
        )
        async with self._engine.connect() as conn:
            count = int(
                (
                    await conn.execute(sa.select(sa.func.count()).select_from(runs).where(*where))
                ).scalar_one()
            )
            newest = await rows_of(
                conn,
                sa.select(*RUN_LIST_COLUMNS, runs.c.parameters, runs.c.event_payload)
                .where(*where)
                .order_by(runs.c.created_at.desc(), runs.c.id.desc())
                .limit(limit),
            )
        return count, newest
