"""Replay: a failed or crashed run asked to run again from its stored event.

A request is a new flow run row, PENDING and owned by no worker, that copies the
old run's event (or parameters) and links to it by `retry_of`. A worker that runs
the flow claims it (`claim_replays`) and runs it with the same run id, so the
API, the CLI and the UI only need the database, not the flow's code.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import StoreError
from .._ids import new_id
from . import _schema as schema
from ._reader import RunNotFoundError

REPLAYABLE_STATES = ("FAILED", "CRASHED", "CANCELLED")

NOT_RUNS = ("Abandoned", "Batched", "CancelSignal", "Duplicate")
"""State names of flow-control records that are not runs of the flow for their own event:
one event of a batch (its batch run ran the flow), a cancel signal, an idempotency
duplicate, and an event abandoned while it waited for a concurrency slot or the rate
limit (CRASHED "Abandoned": it never started, and its source delivers it again, so
that redelivery is its run). Running one again would run what never was meant to run
(or run it twice). The records of events a control cancelled (Debounced, Skipped,
Superseded, CancelledByEvent) are real events, and may run again."""

_COPIED = (
    "flow_name",
    "name",
    "parameters",
    "parent_flow_run_id",
    "event_source",
    "event_partition",
    "event_offset",
    "event_id",
    "event_key",
    "event_payload",
    "event_time",
)


class ReplayError(StoreError, ValueError):
    """The run cannot be replayed (it has not failed, crashed or been cancelled, it is a
    flow control's record that is not a run: `NOT_RUNS`, or it was retried already)."""


def retry_refusal(
    old: Mapping[str, Any],
    retries: Sequence[Mapping[str, Any]],
    redelivery: str | None = None,
) -> str | None:
    """Why run `old` cannot be retried (its retries so far: `retries`, oldest first; the
    newest later delivery of its event: `redelivery`, see `redelivery_of`); None if it can.
    The one rule for the API's 409, the CLI and the UI's Retry button."""
    run_id = old["id"]
    if old["state_type"] not in REPLAYABLE_STATES:
        return (
            f"flow run {run_id} is {old['state_type']}; only FAILED, CRASHED or"
            " CANCELLED runs can be retried"
        )
    refusal = _not_a_run(old)
    if refusal is not None:
        return refusal
    if retries:  # a second retry would run again what the first one ran (a charge twice)
        last = retries[-1]
        retry_id, state = last["id"], last["state_type"]
        if state in REPLAYABLE_STATES:
            return (
                f"flow run {run_id} was retried already as run {retry_id} ({state}):"
                f" retry {retry_id}"
            )
        if state == "COMPLETED":
            return f"flow run {run_id} was retried already as run {retry_id}, which completed"
        return f"flow run {run_id} is being retried already as run {retry_id} ({state})"
    if redelivery is not None:  # its source delivered the event again: that run is its rerun
        return (
            f"the event of flow run {run_id} was delivered again and ran as run {redelivery}:"
            f" retry {redelivery} if it must run again"
        )
    return None


def _same_event_later(later: Any, old: Any) -> tuple[sa.ColumnElement[bool], ...]:
    """`later` is a delivery (not a replay) of `old`'s flow after it (columns or values)."""
    return (
        later.c.flow_name == old["flow_name"],
        later.c.id != old["id"],  # a datetime read back from SQLite may round below itself
        later.c.created_at > old["created_at"],
        later.c.retry_of.is_(None),
        later.c.event_group.is_not_distinct_from(old["event_group"]),
    )


def _at_position(later: Any, old: Any) -> sa.ColumnElement[bool]:
    """The same partitioned event: its position (ix_flow_runs_event_position)."""
    return sa.and_(
        later.c.event_source == old["event_source"],
        later.c.event_partition == old["event_partition"],
        later.c.event_offset == old["event_offset"],
    )


async def redelivery_of(conn: Any, old: Mapping[str, Any]) -> str | None:
    """The newest run of `old`'s event its source delivered after it (a crashed or
    abandoned run's event runs again that way), or None."""
    if old["event_id"] is None and old["event_partition"] is None:
        return None  # a direct call's run: nothing delivers it again
    later = schema.flow_runs.alias("later")
    same = (
        _at_position(later, old)
        if old["event_partition"] is not None
        else sa.and_(later.c.event_partition.is_(None), later.c.event_id == old["event_id"])
    )
    query = (
        sa.select(later.c.id)
        .where(same, *_same_event_later(later, old))
        .order_by(later.c.created_at.desc())
        .limit(1)
    )
    found = (await conn.execute(query)).scalar()
    return None if found is None else str(found)


def _not_a_run(old: Mapping[str, Any]) -> str | None:
    """Why run `old` cannot run again as it is, being a record in `NOT_RUNS`; None if it can."""
    run_id, linked = old["id"], old["linked_run_id"]
    match old["state_name"]:
        case "Abandoned":
            return (
                f"flow run {run_id} is an event abandoned while it waited for a flow control;"
                " it never started, and its source delivered it again: retry that run"
            )
        case "Batched":
            return f"flow run {run_id} is one event of batch run {linked}: retry run {linked}"
        case "Duplicate":
            return (
                f"flow run {run_id} is a Duplicate of run {linked}, which completed its"
                " idempotency key: it has nothing to run"
            )
        case "CancelSignal":
            return (
                f"flow run {run_id} is a cancel signal (cancel_on), not a run of the flow:"
                " it has nothing to run"
            )
    return None


def _request_row(old: Any, now: float, *, full: bool) -> dict[str, Any]:
    """A replay request of run `old`: it resumes `old` (reusing the results of its
    completed task runs, eventflow/_resume.py) unless `full`."""
    return {
        **{column: old[column] for column in _COPIED},
        "id": new_id(),
        "state_type": "PENDING",
        "state_name": "AwaitingReplay",
        "run_count": 0,
        "retry_of": old["id"],
        "resumed_from": None if full else old["id"],
        "created_at": now,
    }


async def _retries(conn: Any, run_id: str) -> list[dict[str, Any]]:
    runs = schema.flow_runs
    query = (
        sa.select(runs.c.id, runs.c.state_type)
        .where(runs.c.retry_of == run_id)
        .order_by(runs.c.created_at, runs.c.id)
    )
    return [dict(row) for row in (await conn.execute(query)).mappings()]


async def request_retry(engine: AsyncEngine, run_id: str, *, full: bool = False) -> str:
    """Ask for run `run_id` (a full id) to run again; the new run's id.

    The new run resumes the old one: its task calls reuse the results of the
    task runs that completed (eventflow/_resume.py). With `full`, it runs all anew.
    A run is retried at most once (`retry_refusal`): retry its retry instead.
    """
    runs = schema.flow_runs
    async with engine.begin() as conn:
        # PostgreSQL: the old run's row lock makes two retries of it take turns, so the
        # second sees the first's request (SQLite renders no FOR UPDATE: its INSERT below
        # checks and writes under the database's write lock)
        old_query = sa.select(runs).where(runs.c.id == run_id).with_for_update()
        found = (await conn.execute(old_query)).mappings().first()
        old = None if found is None else dict(found)
        if old is None:
            raise RunNotFoundError(f"no flow run {run_id!r}")
        refusal = retry_refusal(old, await _retries(conn, run_id), await redelivery_of(conn, old))
        if refusal is not None:
            raise ReplayError(refusal)
        row = _request_row(old, time.time(), full=full)
        if not await _insert_unless_retried(conn, row):  # another retry got in between
            refusal = retry_refusal(old, await _retries(conn, run_id))
            raise ReplayError(refusal or f"flow run {run_id} is being retried already")
    return str(row["id"])


async def _insert_unless_retried(conn: Any, row: dict[str, Any]) -> bool:
    """Insert the request `row` unless its run has a retry by now; whether it did.

    One statement that checks and writes: on SQLite under the database's write lock,
    on PostgreSQL after the caller locked the old run's row (`FOR UPDATE`), with a
    snapshot taken once that lock is held."""
    runs = schema.flow_runs
    columns = list(row)
    values = sa.select(*(sa.literal(row[c], type_=runs.c[c].type).label(c) for c in columns)).where(
        ~sa.exists().where(runs.c.retry_of == row["retry_of"])
    )
    inserted = await conn.execute(runs.insert().from_select(columns, values))
    return bool(inserted.rowcount == 1)


@dataclass(frozen=True, slots=True)
class ReplayFilter:
    """Which runs a bulk replay asks to run again (None: any)."""

    flow_name: str | None = None
    state_types: Sequence[str] = ("FAILED", "CRASHED")
    since: float | None = None
    until: float | None = None
    key: str | None = None

    def where(self) -> list[sa.ColumnElement[bool]]:
        """Runs in `state_types` not replayed yet, and the rest of the filter."""
        wanted = [s.upper() for s in self.state_types]
        bad = sorted(set(wanted) - set(REPLAYABLE_STATES))
        if bad:
            raise ReplayError(f"runs in state(s) {', '.join(bad)} cannot be replayed")
        runs = schema.flow_runs
        replays = runs.alias("replays")
        where = [
            runs.c.state_type.in_(wanted),
            ~sa.exists().where(replays.c.retry_of == runs.c.id),
        ]
        if self.flow_name is not None:
            where.append(runs.c.flow_name == self.flow_name)
        if self.since is not None:
            where.append(runs.c.created_at >= self.since)
        if self.until is not None:
            where.append(runs.c.created_at < self.until)
        if self.key is not None:
            where.append(runs.c.event_key == self.key)
        return where


def _not_delivered_again() -> sa.ColumnElement[bool]:
    """A run whose event its source did not deliver again: a later delivery (a crashed
    run's event, redelivered) ran it (`redelivery_of`); by position, or by id when
    unpartitioned."""
    runs = schema.flow_runs
    later = runs.alias("later")
    return sa.and_(
        ~sa.exists().where(_at_position(later, runs.c), *_same_event_later(later, runs.c)),
        ~sa.exists().where(
            runs.c.event_partition.is_(None),
            later.c.event_partition.is_(None),
            later.c.event_id == runs.c.event_id,
            *_same_event_later(later, runs.c),
        ),
    )


async def request_replay(
    engine: AsyncEngine, matching: ReplayFilter, *, limit: int = 1000, full: bool = False
) -> list[str]:
    """Ask for every run matching the filter (oldest first, at most `limit`) to run again.

    A run that already has a replay request or replay is skipped, so asking twice
    does not run an event twice; so is a record that is not a run (`NOT_RUNS`), and
    a run whose event its source delivered again (that delivery ran it).
    Each replay resumes its run, as `request_retry` does, unless `full`.
    """
    runs = schema.flow_runs
    query = (
        sa.select(runs)
        .where(*matching.where())
        .where(runs.c.state_name.not_in(NOT_RUNS), _not_delivered_again())
        .order_by(runs.c.created_at, runs.c.id)
        .limit(limit)
        .with_for_update()  # as request_retry: a retry asked for meanwhile waits, or wins
    )
    now = time.time()
    asked: list[str] = []
    async with engine.begin() as conn:
        for old in (await conn.execute(query)).mappings().all():
            row = _request_row(old, now, full=full)
            if await _insert_unless_retried(conn, row):
                asked.append(str(row["id"]))
    return asked


async def count_not_runs(engine: AsyncEngine, matching: ReplayFilter) -> int:
    """How many runs matching the filter `request_replay` leaves out: records that are
    not runs (`NOT_RUNS`), and runs whose event was delivered again."""
    runs = schema.flow_runs
    query = (
        sa.select(sa.func.count())
        .select_from(runs)
        .where(*matching.where())
        .where(sa.or_(runs.c.state_name.in_(NOT_RUNS), ~_not_delivered_again()))
    )
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def claim_replays(
    engine: AsyncEngine, flow_names: Sequence[str], worker_id: str, limit: int = 100
) -> list[dict[str, Any]]:
    """Replay requests of `flow_names` this worker now owns (RUNNING, its worker id)."""
    if not flow_names:
        return []
    runs = schema.flow_runs
    pending = (
        sa.select(runs.c.id)
        .where(
            runs.c.state_type == "PENDING",
            runs.c.worker_id.is_(None),
            runs.c.retry_of.is_not(None),
            runs.c.flow_name.in_(list(flow_names)),
        )
        .order_by(runs.c.created_at)
        .limit(limit)
    )
    claimed: list[dict[str, Any]] = []
    async with engine.begin() as conn:
        for run_id in (await conn.execute(pending)).scalars().all():
            # a conditional update: of two workers racing, exactly one changes the row
            result = await conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.worker_id.is_(None))
                .values(worker_id=worker_id, state_type="RUNNING", state_name="Running")
            )
            if result.rowcount == 1:
                row = await conn.execute(sa.select(runs).where(runs.c.id == run_id))
                claimed.append(dict(row.mappings().one()))
    return claimed
