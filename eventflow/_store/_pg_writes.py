"""Writing a batch to PostgreSQL: one statement per table, its rows as arrays.

The generic path (`_batch.write_batch`) hands asyncpg one row at a time
(`executemany`): the server then runs its executor once per row, and that,
more than the index insertions, was most of PostgreSQL's CPU per event. Here
each table gets one `INSERT ... SELECT ... FROM unnest($1::text[], ...)
ON CONFLICT ...`: columns travel as binary arrays, the statement is prepared
once per connection, and the executor runs once per table per batch.

Timestamps travel as epoch seconds (`float8`) and become `timestamptz` in the
statement (`to_timestamp`), sparing the writer a `datetime` per value.

Rows that cannot exist yet (most runs: started and ended between two commits)
go by binary `COPY` instead (`ArrayUpsert.copy`): asyncpg then encodes each
value with its column's codec, where an array parameter costs it two
`isinstance(value, collections.abc.Iterable)` checks per element, and
PostgreSQL inserts them in bulk. bench/store_writes.py, 60,000 events in
batches of 1,000: the writer 13.1 -> 6.9 µs per event, PostgreSQL 21 -> 19.
For COPY, the writer's connection encodes `timestamptz` from epoch seconds
(`_encode_timestamptz`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import sqlalchemy as sa

from .._errors import StoreError
from .._settings import normalize_database_url
from . import _outbox as outbox
from . import _schema as schema
from ._batch import Batch, Row
from ._engine import session_bounds
from ._fences import STALE_TOKENS_POSTGRES, stale
from ._types import Timestamp


def _array_type(column: sa.Column[Any]) -> str:
    kind = column.type
    if isinstance(kind, Timestamp):
        return "float8"
    if isinstance(kind, sa.BigInteger):
        return "int8"
    if isinstance(kind, sa.Integer):
        return "int4"
    if isinstance(kind, sa.LargeBinary):
        return "bytea"
    if isinstance(kind, sa.Boolean):
        return "bool"
    return "text"


def _epoch(value: Any) -> Any:
    return value.timestamp() if isinstance(value, datetime) else value


class ArrayUpsert:
    """One table's `INSERT ... SELECT FROM unnest(...) ON CONFLICT`, as text, with its columns."""

    def __init__(
        self,
        table: sa.Table,
        keys: tuple[str, ...],
        update: tuple[str, ...] | None,
        where: str | None = None,
    ) -> None:
        columns = [c for c in table.columns if c.autoincrement is not True]
        self.table = table.name
        self.columns = tuple(c.name for c in columns)
        self.timestamps = tuple(isinstance(c.type, Timestamp) for c in columns)
        if update is None:
            update = tuple(c for c in self.columns if c not in keys and c != "created_at")
        names = ", ".join(f'"{c}"' for c in self.columns)
        arrays = ", ".join(f"${i + 1}::{_array_type(c)}[]" for i, c in enumerate(columns))
        values = ", ".join(
            f'to_timestamp(u."{c.name}")' if ts else f'u."{c.name}"'
            for c, ts in zip(columns, self.timestamps, strict=True)
        )
        sql = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {values} '
            f"FROM unnest({arrays}) AS u({names})"
        )
        if keys:
            conflict = ", ".join(f'"{k}"' for k in keys)
            if update:
                sets = ", ".join(f'"{c}" = excluded."{c}"' for c in update)
                sql += f" ON CONFLICT ({conflict}) DO UPDATE SET {sets}"
                if where is not None:  # a condition on the stored row
                    sql += f" WHERE {where}"
            else:
                sql += f" ON CONFLICT ({conflict}) DO NOTHING"
        self.sql = sql

    def arguments(self, rows: Iterable[Row]) -> list[list[Any]]:
        rows = list(rows)
        arguments = []
        for column, timestamp in zip(self.columns, self.timestamps, strict=True):
            values = [row.get(column) for row in rows]
            if timestamp:
                values = [v if v is None or type(v) is float else _epoch(v) for v in values]
            arguments.append(values)
        return arguments

    async def execute(self, conn: asyncpg.Connection, rows: Iterable[Row]) -> None:
        await conn.execute(self.sql, *self.arguments(rows))

    async def copy(self, conn: asyncpg.Connection, rows: Iterable[Row]) -> None:
        """Insert rows that cannot exist yet (a unique violation if one does), by binary COPY."""
        columns = self.columns
        records = [tuple([row.get(c) for c in columns]) for row in rows]
        try:
            await conn.copy_records_to_table(self.table, records=records, columns=columns)
        except (TypeError, ValueError, OverflowError) as error:
            # what `execute` reports as a DataError: a value its column cannot take
            raise asyncpg.DataError(f"invalid input for {self.table}: {error}") from error


_FLOWS = ArrayUpsert(schema.flows, ("name",), ("version",))
# the same conditions as the SQLite statements' (_batch.py): final states stay final,
# a dead worker stays dead, stored offsets never move backwards
_FLOW_RUNS = ArrayUpsert(schema.flow_runs, ("id",), None, f'"flow_runs".{schema.NOT_FINAL}')
_TASK_RUNS = ArrayUpsert(schema.task_runs, ("id",), None, f'"task_runs".{schema.NOT_FINAL}')
_EDGES = ArrayUpsert(schema.task_run_edges, ("upstream_id", "downstream_id"), ())
_LOGS = ArrayUpsert(schema.logs, (), None)
_WORKERS = ArrayUpsert(
    schema.workers, ("id",), ("heartbeat_at", "stopped_at"), '"workers".stopped_at IS NULL'
)
_SOURCE_STATUS = ArrayUpsert(schema.source_status, ("worker_id", "subscription"), None)
_CHECKPOINTS = ArrayUpsert(schema.source_checkpoints, ("subscription",), None)
_OFFSETS = ArrayUpsert(
    schema.consumer_offsets,
    ("group_id", "topic", "partition"),
    ("next_offset", "updated_at"),
    '"consumer_offsets".next_offset <= excluded.next_offset',
)
_SETTLE_CLAIMS = (
    "UPDATE idempotency_keys AS c SET state = u.state, completed_at = to_timestamp(u.completed_at)"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[])"
    " AS u(flow_name, key, run_id, state, completed_at)"
    " WHERE c.flow_name = u.flow_name AND c.key = u.key AND c.run_id = u.run_id"
)


_POSTGRES_EPOCH = 946684800.0
"""2000-01-01 UTC in Unix seconds: PostgreSQL counts timestamps from there."""


def _encode_timestamptz(value: float | datetime) -> tuple[int]:
    """A `timestamptz` for binary COPY: microseconds since 2000-01-01 UTC."""
    seconds = value if type(value) is float else _epoch(value)
    return (round((seconds - _POSTGRES_EPOCH) * 1_000_000),)


def _decode_timestamptz(value: tuple[int]) -> datetime:
    return datetime.fromtimestamp(value[0] / 1_000_000 + _POSTGRES_EPOCH, UTC)


FINAL_STATES = frozenset(schema.FINAL_STATES)


async def _write_runs(
    conn: asyncpg.Connection, table: ArrayUpsert, rows: dict[str, Row], stored: set[str] | None
) -> None:
    """Upsert the rows `stored` holds (or all, if None); copy the others in."""
    if stored is None:
        await table.execute(conn, rows.values())
        return
    fresh = [row for key, row in rows.items() if key not in stored]
    if len(fresh) < len(rows):
        await table.execute(conn, [row for key, row in rows.items() if key in stored])
    if fresh:
        await table.copy(conn, fresh)


async def write_batch_postgres(
    conn: asyncpg.Connection, batch: Batch, stored: set[str] | None = None
) -> None:
    """Write `batch` in the caller's transaction, in `RECORD_FIELDS` order.

    Run rows whose id is not in `stored` are inserted without ON CONFLICT (a
    unique violation if one exists after all); with `stored` None all are upserted.
    Records made under a fencing token that is no longer current are left out
    (`Batch.drop_fenced`).
    """
    tokens = batch.fence_tokens()
    if tokens:
        current = await conn.fetch(STALE_TOKENS_POSTGRES, sorted({s for s, _ in tokens}))
        stale_tokens = stale(((r[0], r[1]) for r in current), tokens)
        if stale_tokens:
            batch.drop_fenced(stale_tokens)
    if batch.flows:
        await _FLOWS.execute(conn, batch.flows.values())
    if batch.flow_runs:
        await _write_runs(conn, _FLOW_RUNS, batch.flow_runs, stored)
        if published := outbox.messages(batch.flow_runs.values()):
            await conn.execute(outbox.POSTGRES_INSERT, *outbox.postgres_arguments(published))
    if batch.task_runs:
        await _write_runs(conn, _TASK_RUNS, batch.task_runs, stored)
    if batch.edges:
        await _EDGES.execute(conn, batch.edges.values())
    if batch.logs:
        await _LOGS.copy(conn, batch.logs)
    if batch.offsets:
        await _OFFSETS.execute(conn, batch.offsets.values())
    if batch.checkpoints:
        await _CHECKPOINTS.execute(conn, batch.checkpoints.values())
    if batch.workers:
        await _WORKERS.execute(conn, batch.workers.values())
    if batch.source_status:
        await _SOURCE_STATUS.execute(conn, batch.source_status.values())
    if batch.idempotency:
        claims = batch.idempotency
        await conn.execute(
            _SETTLE_CLAIMS,
            [c["b_flow_name"] for c in claims],
            [c["b_key"] for c in claims],
            [c["b_run_id"] for c in claims],
            [c["b_state"] for c in claims],
            [_epoch(c["b_completed_at"]) for c in claims],
        )


def asyncpg_dsn(database_url: str) -> str:
    """The URL asyncpg takes for a SQLAlchemy PostgreSQL URL (any driver name)."""
    url = sa.engine.make_url(normalize_database_url(database_url))
    if url.get_backend_name() != "postgresql":
        raise StoreError(f"not a PostgreSQL URL: {url.get_backend_name()!r}")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresWriter:
    """Commits batches on one asyncpg connection, opened on first use and after a failure.

    Most runs start and end between two commits: their rows are written once,
    final. Copying those in, without ON CONFLICT, spares PostgreSQL a speculative
    insertion per row (bench/store_writes.py: about a quarter of its CPU per
    event). The writer remembers the ids it stored in a state that will
    change (`_unfinished`) and upserts those; a row it does not know that
    exists all the same (a resumed or replayed run, a batch written by a writer
    process that died) fails the batch with a unique violation, and the batch
    is written again, every row upserted.
    """

    connect_timeout = 30.0
    command_timeout = 120.0
    statement_timeout = 30.0
    """Server-side: a writer frozen mid-batch (its COPY half sent) holds its locks no
    longer (a batch takes well under a second; one that times out is retried)."""

    def __init__(self, database_url: str) -> None:
        self._dsn = asyncpg_dsn(database_url)
        self._conn: asyncpg.Connection | None = None
        self._unfinished: set[str] = set()
        """Ids of flow and task runs stored in a state that is not final."""

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._dsn,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings={
                    "application_name": "eventflow-writer",
                    **session_bounds(self.statement_timeout),
                },
            )
            await self._conn.set_type_codec(
                "timestamptz",
                schema="pg_catalog",
                encoder=_encode_timestamptz,
                decoder=_decode_timestamptz,
                format="tuple",
            )
        return self._conn

    async def commit(self, batch: Batch) -> None:
        conn = await self._connection()
        try:
            try:
                async with conn.transaction():
                    await write_batch_postgres(conn, batch, self._unfinished)
            except asyncpg.UniqueViolationError:
                async with conn.transaction():
                    await write_batch_postgres(conn, batch, None)
        except BaseException:
            await self._drop()
            raise
        unfinished = self._unfinished
        for rows in (batch.flow_runs, batch.task_runs):
            for key, row in rows.items():
                if row.get("state_type") in FINAL_STATES:
                    unfinished.discard(key)
                else:
                    unfinished.add(key)

    async def _drop(self) -> None:
        """Forget the connection after a failure (the next commit opens a new one)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()
