"""Reading kept task results: the runs a resumed run picks up from."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .._resume import KeptResult, Resume
from . import _schema as schema
from ._recovery import DONE_STATES

K = TypeVar("K", bound=Hashable)


def _kept_columns() -> tuple[Any, ...]:
    tasks = schema.task_runs
    return (tasks.c.id, tasks.c.task_name, tasks.c.position, tasks.c.result)


def _reusable() -> tuple[Any, ...]:
    """Task runs a resumed run counts as done: COMPLETED calls of the flow itself
    (its result kept or not: one not kept runs again alone)."""
    tasks = schema.task_runs
    return (tasks.c.state_type == "COMPLETED", tasks.c.position.is_not(None))


async def unfinished_runs(
    engine: AsyncEngine,
    flow_name: str,
    stream: str,
    partition: int,
    from_offset: int,
    group: str | None = None,
) -> dict[int, Resume]:
    """Events at or after `from_offset` whose runs of `flow_name` did not end, with
    the results their completed task runs kept (only events with at least one).
    Runs of consumer group `group` only (or of none, as `finished_events`).

    Of several such runs of one event (it crashed more than once), the newest is
    resumed, with the results of older ones it did not reach (`_plans`).
    """
    runs, tasks = schema.flow_runs, schema.task_runs
    query = (
        sa.select(runs.c.event_offset, runs.c.id, runs.c.created_at, *_kept_columns())
        .join(tasks, tasks.c.flow_run_id == runs.c.id)
        .where(
            runs.c.event_source == stream,
            runs.c.event_partition == partition,
            runs.c.event_offset >= from_offset,
            runs.c.flow_name == flow_name,
            runs.c.state_type.not_in(DONE_STATES),
            sa.or_(runs.c.event_group.is_(None), runs.c.event_group == group),
            *_reusable(),
        )
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return _plans(rows, int)


async def unfinished_event_runs(
    engine: AsyncEngine, flow_name: str, event_ids: Sequence[str]
) -> dict[str, Resume]:
    """Of `event_ids` (unpartitioned sources), those whose runs of `flow_name` did not
    end, with the results their completed task runs kept; as `unfinished_runs`."""
    if not event_ids:
        return {}
    runs, tasks = schema.flow_runs, schema.task_runs
    query = (
        sa.select(runs.c.event_id, runs.c.id, runs.c.created_at, *_kept_columns())
        .join(tasks, tasks.c.flow_run_id == runs.c.id)
        .where(
            runs.c.event_id.in_(list(event_ids)),
            runs.c.event_partition.is_(None),  # as the partial index ix_flow_runs_event_id
            runs.c.flow_name == flow_name,
            runs.c.state_type.not_in(DONE_STATES),
            *_reusable(),
        )
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return _plans(rows, str)


def _plans(rows: Iterable[Any], event: Callable[[Any], K]) -> dict[K, Resume]:
    """Rows of (event, run id, created at, *kept columns) as a plan per event.

    An event that crashed more than once resumes its newest run, which may not
    have got as far as an older one (it crashed again before reusing all): the
    older runs fill the positions it has no completed call at, up to the first
    position where a newer run called another task (it took another path).
    """
    by_event: dict[K, list[Any]] = {}
    for row in rows:
        by_event.setdefault(event(row[0]), []).append(row)
    plans: dict[K, Resume] = {}
    for key, found in by_event.items():
        found.sort(key=lambda r: (r[2], r[1]), reverse=True)  # newest run first, rows together
        results: dict[int, KeptResult] = {}
        completed: dict[int, str] = {}
        bound = float("inf")
        for _run_id, run_rows in itertools.groupby(found, key=lambda r: r[1]):
            calls = {row[5]: row for row in run_rows}  # by position
            bound = min(
                [bound, *(p for p, row in calls.items() if completed.get(p, row[4]) != row[4])]
            )
            for position, (*_, task_run_id, task_name, _position, result) in calls.items():
                if position < bound and position not in completed:
                    completed[position] = task_name
                    if result is not None:
                        results[position] = KeptResult(task_run_id, task_name, result)
        plans[key] = Resume(found[0][1], results, completed)
    return plans


async def run_results(engine: AsyncEngine, run_id: str) -> Resume:
    """What a retry of run `run_id` reuses: its completed task runs' kept results."""
    tasks = schema.task_runs
    query = sa.select(*_kept_columns()).where(tasks.c.flow_run_id == run_id, *_reusable())
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return Resume(
        run_id,
        _results(row for row in rows if row[3] is not None),
        {int(position): name for _id, name, position, _result in rows},
    )


def _results(rows: Iterable[Any]) -> dict[int, KeptResult]:
    return {
        int(position): KeptResult(task_run_id, task_name, result)
        for task_run_id, task_name, position, result in rows
    }


async def crashed_calls(engine: AsyncEngine, flow_name: str, since: float) -> dict[str, str]:
    """Direct calls of `flow_name` (batch jobs) that CRASHED after `since` and that no run
    resumed or retried yet: the newest run id by its parameters (JSON)."""
    runs = schema.flow_runs
    later = runs.alias("later")
    query = (
        sa.select(runs.c.id, runs.c.parameters)
        .where(
            runs.c.state_type == "CRASHED",
            runs.c.created_at >= since,
            runs.c.flow_name == flow_name,
            runs.c.event_id.is_(None),
            runs.c.parent_flow_run_id.is_(None),
            runs.c.retry_of.is_(None),
            ~sa.exists().where(later.c.resumed_from == runs.c.id),
            ~sa.exists().where(later.c.retry_of == runs.c.id),
        )
        .order_by(runs.c.created_at)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).all()
    return {str(parameters): str(run_id) for run_id, parameters in rows}
