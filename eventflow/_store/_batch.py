"""A batch of run records, and how it is written in one transaction.

The writer (eventflow/_store/_writer.py) fills batches; a committer
(eventflow/_store/_committer.py) writes them, in the writer's thread or in a
child process, with `write_batch`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .._errors import StoreError
from . import _outbox as outbox
from . import _schema as schema
from ._fences import Token, stale_tokens_sqlite
from ._types import Timestamp

Row = dict[str, Any]


@dataclass(slots=True)
class Batch:
    flows: dict[str, Row] = field(default_factory=dict)
    flow_runs: dict[str, Row] = field(default_factory=dict)
    task_runs: dict[str, Row] = field(default_factory=dict)
    edges: dict[tuple[str, str], Row] = field(default_factory=dict)
    logs: list[Row] = field(default_factory=list)
    offsets: dict[tuple[str, str, int], Row] = field(default_factory=dict)
    checkpoints: dict[str, Row] = field(default_factory=dict)
    workers: dict[str, Row] = field(default_factory=dict)
    source_status: dict[tuple[str, str], Row] = field(default_factory=dict)
    idempotency: list[Row] = field(default_factory=list)
    markers: list[Any] = field(default_factory=list)
    """The writer's flush markers, resolved once the batch is committed."""
    commit_hooks: list[Callable[[], None]] = field(default_factory=list)
    fenced: set[Token] = field(default_factory=set)
    """Fencing tokens found stale while writing: their records were left out."""

    # What the writer's queue holds is added by these (eventflow/_store/_writer.py);
    # records of a table with a key replace the earlier one of the same key.

    def add_flow(self, row: Row) -> None:
        self.flows[row["name"]] = row

    def add_edge(self, row: Row) -> None:
        self.edges[(row["upstream_id"], row["downstream_id"])] = row

    def add_log(self, row: Row) -> None:
        self.logs.append(row)

    def add_offsets(self, record: tuple[list[Row], Callable[[], None] | None]) -> None:
        """Offsets rows, and what to call once they are committed."""
        rows, on_commit = record
        for row in rows:
            self.offsets[(row["group_id"], row["topic"], row["partition"])] = row
        if on_commit is not None:
            self.commit_hooks.append(on_commit)

    def add_worker(self, row: Row) -> None:
        self.workers[row["id"]] = row

    def add_source_status(self, row: Row) -> None:
        self.source_status[(row["worker_id"], row["subscription"])] = row

    def add_idempotency(self, row: Row) -> None:
        self.idempotency.append(row)

    def add_checkpoint(self, row: Row) -> None:
        self.checkpoints[row["subscription"]] = row

    def one_by_one(self) -> Iterator[Batch]:
        """Each record as a batch of its own, in commit order (to isolate a refused one)."""
        for name in RECORD_FIELDS:
            records = getattr(self, name)
            for key, row in records.items() if isinstance(records, dict) else enumerate(records):
                single = Batch()
                target = getattr(single, name)
                if isinstance(target, dict):
                    target[key] = row
                else:
                    target.append(row)
                yield single

    def records(self) -> tuple[Any, ...]:
        """The records alone, in `RECORD_FIELDS` order (what a writer process receives)."""
        return tuple(getattr(self, name) for name in RECORD_FIELDS)

    @classmethod
    def of_records(cls, records: tuple[Any, ...]) -> Batch:
        batch = cls()
        for name, value in zip(RECORD_FIELDS, records, strict=True):
            setattr(batch, name, value)
        return batch

    def fence_tokens(self) -> set[Token]:
        """The fencing tokens the batch's records were made under (eventflow/_store/_fences.py)."""
        tokens: set[Token | None] = set()
        for rows in (self.flow_runs, self.task_runs, self.offsets, self.checkpoints, self.workers):
            if rows:
                tokens.update([row.get("fence") for row in rows.values()])
        tokens.discard(None)
        return tokens  # type: ignore[return-value]

    def drop_fenced(self, stale: set[Token]) -> int:
        """Remove the records made under `stale` tokens, and those of their runs; how many."""
        before = self.record_count()
        self.fenced |= stale
        runs: set[str] = set()
        for name in ("flow_runs", "task_runs"):
            rows: dict[str, Row] = getattr(self, name)
            kept = {key: row for key, row in rows.items() if row.get("fence") not in stale}
            if len(kept) < len(rows):
                runs.update(
                    row["id"] if name == "flow_runs" else row["flow_run_id"]
                    for key, row in rows.items()
                    if key not in kept
                )
                setattr(self, name, kept)
        for name in ("offsets", "checkpoints", "workers"):
            rows = getattr(self, name)
            if any(row.get("fence") in stale for row in rows.values()):
                setattr(self, name, {k: r for k, r in rows.items() if r.get("fence") not in stale})
        if runs:
            self.task_runs = {
                k: r for k, r in self.task_runs.items() if r["flow_run_id"] not in runs
            }
            self.edges = {k: r for k, r in self.edges.items() if r["flow_run_id"] not in runs}
            self.logs = [row for row in self.logs if row["flow_run_id"] not in runs]
            self.idempotency = [row for row in self.idempotency if row["b_run_id"] not in runs]
        return before - self.record_count()

    def record_count(self) -> int:
        return (
            len(self.flows)
            + len(self.flow_runs)
            + len(self.task_runs)
            + len(self.edges)
            + len(self.logs)
            + len(self.offsets)
            + len(self.checkpoints)
            + len(self.workers)
            + len(self.source_status)
            + len(self.idempotency)
        )


def describe(single: Batch) -> str:
    """Which table and id a one-record batch is for, without its values (they may be secret)."""
    for name in RECORD_FIELDS:
        records = getattr(single, name)
        if records:
            row = next(iter(records.values())) if isinstance(records, dict) else records[0]
            return f"{name} (id {row.get('id', '?')})"
    return "empty"


RECORD_FIELDS = (
    "flows",
    "flow_runs",
    "task_runs",
    "edges",
    "logs",
    "offsets",
    "checkpoints",
    "workers",
    "source_status",
    "idempotency",
)
"""The record fields of `Batch`, in the order `_write_batch` writes them."""


class RemoteWriteError(StoreError):
    """A batch a writer process could not write; `transient` says whether to retry it."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient
        self.orig = message  # what the writer logs of a database error


def is_transient(error: BaseException) -> bool:
    """Whether the same batch may succeed later; only errors about the data itself are not.

    Anything else (refused or dropped connections, a server shutting down, a
    locked SQLite file, timeouts, errors drivers do not classify) is retried:
    losing runs is worse than waiting for the database.
    """
    if isinstance(error, RemoteWriteError):
        return error.transient
    if isinstance(error, (sa.exc.IntegrityError, sa.exc.DataError)):
        return False
    orig = getattr(error, "orig", error)
    if isinstance(error, sa.exc.ProgrammingError) and "binding parameter" in str(orig):
        return False  # sqlite3: a value of a type it cannot store
    asyncpg = sys.modules.get("asyncpg")  # loaded if the error is its (an optional extra)
    if asyncpg is not None and isinstance(orig, asyncpg.DataError):
        return False  # asyncpg: a value it cannot encode for its column
    # asyncpg's data errors reach SQLAlchemy unclassified; SQLSTATE tells:
    # class 22 (data exception: NUL byte, value too long) and 23 (constraint)
    sqlstate = str(getattr(orig, "sqlstate", "") or "")
    return sqlstate[:2] not in ("22", "23")


class _Upsert:
    """One table's INSERT ... ON CONFLICT, rendered once, executed with plain tuples.

    Rows skip SQLAlchemy's per-value processing, the writer's hottest cost: the
    driver gets values in column order; timestamps stay epoch floats (see
    `Timestamp`). SQLite only (PostgreSQL: `_pg_writes`). Many rows per
    statement: `sqlite3` releases the GIL around each statement it steps, and one
    release per row would hand the GIL back and forth with the event loop thread
    hundreds of times a batch.
    """

    def __init__(
        self,
        table: sa.Table,
        keys: tuple[str, ...],
        update: tuple[str, ...] | None,
        where: str | None = None,
    ) -> None:
        self.table = table
        self.columns = tuple(c.name for c in table.columns if c.autoincrement is not True)
        self.keys = keys
        self.where = where
        """A condition on the stored row (qualified by its table): the update applies only then."""
        if update is None:
            update = tuple(c for c in self.columns if c not in keys and c != "created_at")
        self.update = update
        self.timestamp_positions = tuple(
            i for i, c in enumerate(self.columns) if isinstance(table.c[c].type, Timestamp)
        )
        # a power of two, at most 512 rows and 30,000 parameters (SQLite allows 32,766)
        self.rows_per_statement = 1 << min(9, (30_000 // len(self.columns)).bit_length() - 1)
        self._sql: dict[tuple[str, int], str] = {}

    def sql(self, dialect: sa.Dialect, rows: int = 1) -> str:
        text = self._sql.get((dialect.name, rows))
        if text is None:
            text = self._sql[(dialect.name, rows)] = self._render(dialect, rows)
        return text

    def chunks(self, rows: int) -> Iterator[int]:
        """Rows per statement for `rows` rows: full statements, then powers of two.

        So a table has at most ten statement shapes: `sqlite3` keeps up to 128
        prepared statements per connection, and a 500-row upsert takes 1.6 MB
        prepared (one shape per remainder grew a worker by 150 MB).
        """
        full, rest = divmod(rows, self.rows_per_statement)
        yield from (self.rows_per_statement,) * full
        size = self.rows_per_statement >> 1
        while rest:
            if rest & size:
                yield size
                rest -= size
            size >>= 1

    def _render(self, dialect: sa.Dialect, rows: int) -> str:
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(c) for c in self.columns)
        style = dialect.paramstyle
        if style == "qmark":
            marks = ", ".join("?" for _ in self.columns)
        elif style == "numeric_dollar":
            marks = ", ".join(f"${i + 1}" for i in range(len(self.columns)))
        elif style == "format":
            marks = ", ".join("%s" for _ in self.columns)
        else:  # pragma: no cover - every driver eventflow installs is one of the above
            raise StoreError(f"unsupported DB-API paramstyle {style!r}")
        values = ", ".join([f"({marks})"] * rows)
        text = f"INSERT INTO {quote(self.table.name)} ({names}) VALUES {values}"
        if not self.keys:
            return text
        conflict = ", ".join(quote(k) for k in self.keys)
        if not self.update:
            return f"{text} ON CONFLICT ({conflict}) DO NOTHING"
        updates = ", ".join(f"{quote(c)} = excluded.{quote(c)}" for c in self.update)
        where = "" if self.where is None else f" WHERE {self.where}"
        return f"{text} ON CONFLICT ({conflict}) DO UPDATE SET {updates}{where}"

    def execute(self, conn: sa.Connection, rows: Iterable[Row]) -> None:
        dialect = conn.dialect
        columns = self.columns
        values = [row.get(c) for row in rows for c in columns]
        start = 0
        for count in self.chunks(len(values) // len(columns)):
            end = start + count * len(columns)
            conn.exec_driver_sql(self.sql(dialect, count), tuple(values[start:end]))
            start = end


def write_batch(conn: sa.Connection, batch: Batch) -> None:
    """Write `batch` to SQLite in the caller's transaction (PostgreSQL: `_pg_writes`).

    Records made under a fencing token that is no longer current are left out
    (`Batch.drop_fenced`).
    """
    tokens = batch.fence_tokens()
    if tokens:
        stale = stale_tokens_sqlite(conn, tokens)
        if stale:
            batch.drop_fenced(stale)
    if batch.flows:
        _FLOWS.execute(conn, batch.flows.values())
    if batch.flow_runs:
        _FLOW_RUNS.execute(conn, batch.flow_runs.values())
        if published := outbox.messages(batch.flow_runs.values()):
            outbox.write_sqlite(conn, published)
    if batch.task_runs:
        _TASK_RUNS.execute(conn, batch.task_runs.values())
    if batch.edges:
        _EDGES.execute(conn, batch.edges.values())
    if batch.logs:
        _LOGS.execute(conn, batch.logs)
    if batch.offsets:
        _OFFSETS_UPSERT.execute(conn, batch.offsets.values())
    if batch.checkpoints:
        _CHECKPOINTS.execute(conn, batch.checkpoints.values())
    if batch.workers:
        _WORKERS.execute(conn, batch.workers.values())
    if batch.source_status:
        _SOURCE_STATUS_UPSERT.execute(conn, batch.source_status.values())
    if batch.idempotency:
        conn.execute(_SETTLE_CLAIM, batch.idempotency)


_FLOWS = _Upsert(schema.flows, ("name",), ("version",))
# a run in a final state is never changed, whoever writes (contract: docs/guarantees.md)
_FLOW_RUNS = _Upsert(schema.flow_runs, ("id",), None, f"flow_runs.{schema.NOT_FINAL}")
_TASK_RUNS = _Upsert(schema.task_runs, ("id",), None, f"task_runs.{schema.NOT_FINAL}")
_EDGES = _Upsert(schema.task_run_edges, ("upstream_id", "downstream_id"), ())
_LOGS = _Upsert(schema.logs, (), None)
# a worker declared dead (or stopped) stays so: only `revive` brings its lease back
_WORKERS = _Upsert(
    schema.workers, ("id",), ("heartbeat_at", "stopped_at"), "workers.stopped_at IS NULL"
)
_SOURCE_STATUS_UPSERT = _Upsert(schema.source_status, ("worker_id", "subscription"), None)
_CHECKPOINTS = _Upsert(schema.source_checkpoints, ("subscription",), None)
# a stored offset never moves backwards (an operator's `eventflow offsets set` writes apart)
_OFFSETS_UPSERT = _Upsert(
    schema.consumer_offsets,
    ("group_id", "topic", "partition"),
    ("next_offset", "updated_at"),
    "consumer_offsets.next_offset <= excluded.next_offset",
)


_CLAIMS = schema.idempotency_keys
_SETTLE_CLAIM = (
    _CLAIMS.update()
    .where(
        _CLAIMS.c.flow_name == sa.bindparam("b_flow_name"),
        _CLAIMS.c.key == sa.bindparam("b_key"),
        _CLAIMS.c.run_id == sa.bindparam("b_run_id"),
    )
    .values(
        state=sa.bindparam("b_state"),
        completed_at=sa.bindparam("b_completed_at", type_=_CLAIMS.c.completed_at.type),
    )
)
