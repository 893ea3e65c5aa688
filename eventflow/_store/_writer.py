"""RunWriter: every run record goes through here, batched into group commits.

Callers on any thread append records to a queue without waiting; a dedicated
thread with its own event loop drains the queue every `flush_interval` (or at
once when someone awaits `flush()`), coalesces the records by run id so a run
that started and finished within one interval is one row, and writes the lot in
one transaction. Being on its own thread, the store serves sync callers,
user event loops and the worker's loop alike and never blocks any of them.

If the database is unreachable the batch is kept and retried with backoff;
`healthy` turns False so the streaming runtime can pause, and `flush()` waiters
simply wait until the data is durable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from .._errors import StoreError
from . import _schema as schema
from ._engine import is_sqlite, make_engine, make_sync_engine
from ._types import Timestamp

logger = logging.getLogger("eventflow.store")

Row = dict[str, Any]

_FLOW_RUN = 0
_TASK_RUN = 1
_EDGE = 2
_LOG = 3
_FLOW = 4
_OFFSETS = 5
_WORKER = 6
_SOURCE_STATUS = 7
_IDEMPOTENCY = 8


@dataclass(slots=True)
class _FlushMarker:
    """Placed in the queue by `flush()`: resolved once everything before it is committed.

    `future` belongs to `loop` (an async caller) or is a concurrent future (`loop`
    is None, a blocking caller).
    """

    future: asyncio.Future[None] | concurrent.futures.Future[None]
    loop: asyncio.AbstractEventLoop | None


@dataclass(slots=True)
class _Batch:
    flows: dict[str, Row] = field(default_factory=dict)
    flow_runs: dict[str, Row] = field(default_factory=dict)
    task_runs: dict[str, Row] = field(default_factory=dict)
    edges: dict[tuple[str, str], Row] = field(default_factory=dict)
    logs: list[Row] = field(default_factory=list)
    offsets: dict[tuple[str, str, int], Row] = field(default_factory=dict)
    workers: dict[str, Row] = field(default_factory=dict)
    source_status: dict[tuple[str, str], Row] = field(default_factory=dict)
    idempotency: list[Row] = field(default_factory=list)
    markers: list[_FlushMarker] = field(default_factory=list)
    commit_hooks: list[Callable[[], None]] = field(default_factory=list)

    def one_by_one(self) -> Iterator[_Batch]:
        """Each record as a batch of its own, in commit order (to isolate a refused one)."""
        for name in _RECORD_FIELDS:
            records = getattr(self, name)
            for key, row in records.items() if isinstance(records, dict) else enumerate(records):
                single = _Batch()
                target = getattr(single, name)
                if isinstance(target, dict):
                    target[key] = row
                else:
                    target.append(row)
                yield single

    def record_count(self) -> int:
        return (
            len(self.flows)
            + len(self.flow_runs)
            + len(self.task_runs)
            + len(self.edges)
            + len(self.logs)
            + len(self.offsets)
            + len(self.workers)
            + len(self.source_status)
            + len(self.idempotency)
        )


def _describe(single: _Batch) -> str:
    """Which table and id a one-record batch is for, without its values (they may be secret)."""
    for name in _RECORD_FIELDS:
        records = getattr(single, name)
        if records:
            row = next(iter(records.values())) if isinstance(records, dict) else records[0]
            return f"{name} (id {row.get('id', '?')})"
    return "empty"


_RECORD_FIELDS = (
    "flows",
    "flow_runs",
    "task_runs",
    "edges",
    "logs",
    "offsets",
    "workers",
    "source_status",
    "idempotency",
)
"""The record fields of `_Batch`, in the order `_write_batch` writes them."""


@dataclass(slots=True)
class WriterStats:
    """Counters a metrics exporter can read without locking."""

    batches: int = 0
    records: int = 0
    last_batch_records: int = 0
    last_batch_seconds: float = 0.0
    failures: int = 0
    dropped: int = 0
    """Records the database refused for their data (logged one by one)."""


def _is_transient(error: BaseException) -> bool:
    """Whether the same batch may succeed later; only errors about the data itself are not.

    Anything else (refused or dropped connections, a server shutting down, a
    locked SQLite file, timeouts, errors drivers do not classify) is retried:
    losing runs is worse than waiting for the database.
    """
    if isinstance(error, (sa.exc.IntegrityError, sa.exc.DataError)):
        return False
    # asyncpg's data errors reach SQLAlchemy unclassified; SQLSTATE tells:
    # class 22 (data exception: NUL byte, value too long) and 23 (constraint)
    sqlstate = str(getattr(getattr(error, "orig", None), "sqlstate", "") or "")
    return sqlstate[:2] not in ("22", "23")


class RunWriter:
    """Batched, idempotent writes of runs, task runs, edges, logs and offsets."""

    def __init__(self, database_url: str, *, flush_interval: float = 0.05) -> None:
        self.database_url = database_url
        self.flush_interval = flush_interval
        self.healthy = True
        self.healthy_since = time.time()
        self.last_error: str | None = None
        self.stats = WriterStats()
        self._timings: deque[tuple[float, int]] = deque(maxlen=10_000)
        self._in_commit = 0
        self._queue: deque[Any] = deque()
        self._known_flows: set[str] = set()
        self._wake_pending = False
        self._idle = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._engine: AsyncEngine | None = None
        self._sqlite: sa.Engine | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._start_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent); blocks until it is ready."""
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(
                target=self._thread_main, name="eventflow-writer", daemon=True
            )
            self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise StoreError(
                f"cannot start the run writer: {self._start_error}"
            ) from self._start_error

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything queued, then stop the thread and dispose of the engine."""
        if self._thread is None or self._loop is None:
            return
        self._closing = True
        self._request_wake()
        self._thread.join(timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Records not yet committed: queued, or in the batch being committed (or retried)."""
        return len(self._queue) + self._in_commit

    def take_batch_timings(self) -> list[tuple[float, int]]:
        """(seconds, records) of the group commits since the last call, for metrics."""
        timings = self._timings
        return [timings.popleft() for _ in range(len(timings))]

    # -- producers (any thread, never block) ----------------------------------------

    def ensure_flow(self, name: str, version: str | None) -> None:
        if name not in self._known_flows:
            self._known_flows.add(name)
            self._queue.append(
                (_FLOW, {"name": name, "version": version, "created_at": time.time()})
            )

    def put_flow_run(self, row: Row) -> None:
        self._queue.append((_FLOW_RUN, row))

    def put_task_run(self, row: Row) -> None:
        self._queue.append((_TASK_RUN, row))

    def put_edge(self, row: Row) -> None:
        self._queue.append((_EDGE, row))

    def put_log(self, row: Row) -> None:
        self._queue.append((_LOG, row))

    def put_worker(self, row: Row) -> None:
        """A worker's registration or heartbeat (id, hostname, pid, started_at, heartbeat_at)."""
        self._queue.append((_WORKER, row))

    def put_source_status(self, row: Row) -> None:
        """A subscription's live counters (a `source_status` row), for the API and UI."""
        self._queue.append((_SOURCE_STATUS, row))

    def put_idempotency(self, row: Row) -> None:
        """Settle a claim (flow_name, key, run_id, state, completed_at) in the run's transaction.

        Only the claim's holder changes it: a claim another run took over is left alone.
        """
        self._queue.append((_IDEMPOTENCY, {f"b_{k}": v for k, v in row.items()}))

    def put_offsets(
        self,
        group_id: str,
        offsets: Iterable[tuple[str, int, int]],
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        """Store `(topic, partition, next_offset)` in the transaction of the runs queued before.

        `on_commit` runs on the writer thread once that transaction has committed.
        """
        now = time.time()
        rows = [
            {"group_id": group_id, "topic": t, "partition": p, "next_offset": o, "updated_at": now}
            for t, p, o in offsets
        ]
        self._queue.append((_OFFSETS, (rows, on_commit)))

    # -- flushing -----------------------------------------------------------------

    async def flush(self) -> None:
        """Return once every record queued before this call is committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append(_FlushMarker(future, loop))
        self._request_wake()
        await future

    def flush_blocking(self, timeout: float | None = None) -> None:
        """`flush()` for sync callers; never call it on an event loop thread."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._queue.append(_FlushMarker(future, None))
        self._request_wake()
        future.result(timeout)

    def _request_wake(self) -> None:
        # Waking a thread costs a syscall; a writer that is busy drains the queue
        # again before it sleeps, so only an idle writer needs it.
        if not self._idle or self._wake_pending or self._loop is None or self._wake is None:
            return
        self._wake_pending = True
        with contextlib.suppress(RuntimeError):  # the writer loop already stopped
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- the writer thread -----------------------------------------------------------

    def _thread_main(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        try:
            self._loop = asyncio.get_running_loop()
            self._wake = asyncio.Event()
            self._engine = make_engine(self.database_url)
            if is_sqlite(self.database_url):
                self._sqlite = make_sync_engine(self.database_url)
        except BaseException as error:
            self._start_error = error
            self._ready.set()
            return
        self._ready.set()
        batch = _Batch()
        backoff = 0.05
        try:
            while True:
                self._idle = True  # before looking at the queue: see _request_wake
                if not self._queue and batch.record_count() == 0 and not batch.markers:
                    if self._closing:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._idle = False
                self._wake.clear()
                self._wake_pending = False
                self._drain_into(batch)
                if batch.record_count() == 0 and not batch.commit_hooks:
                    self._settle_markers(batch, None)
                    continue
                self._in_commit = batch.record_count()
                try:
                    await self._commit(batch)
                except Exception as error:
                    self.stats.failures += 1
                    if not _is_transient(error):
                        try:
                            await self._commit_salvaging(batch, error)
                        except Exception as salvage_error:  # the database went away meanwhile
                            error = salvage_error
                        else:
                            self._committed(batch)
                            batch = _Batch()
                            continue
                    if self.healthy:
                        logger.warning("run store unavailable, retrying: %s", error)
                    self.healthy = False
                    self.last_error = str(error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                backoff = 0.05
                self._committed(batch)
                batch = _Batch()
        finally:
            await self._engine.dispose()
            if self._sqlite is not None:
                self._sqlite.dispose()

    def _committed(self, batch: _Batch) -> None:
        self._in_commit = 0
        if not self.healthy:
            logger.warning("run store available again")
            self.healthy_since = time.time()
        self.healthy = True
        self.last_error = None
        for hook in batch.commit_hooks:
            try:
                hook()
            except Exception:
                logger.exception("an on-commit hook failed")
        self._settle_markers(batch, None)

    async def _commit_salvaging(self, batch: _Batch, error: BaseException) -> None:
        """The database refused the batch for its data: commit it record by record.

        Only the records it refuses again are dropped (and logged); the rest of
        the batch, offsets included, is stored. A transient error raises, and
        the whole batch is retried as usual.
        """
        logger.error(
            "the database refused a batch of %d records: %s",
            batch.record_count(),
            getattr(error, "orig", error),
        )
        dropped = 0
        for single in batch.one_by_one():
            try:
                await self._commit(single)
            except Exception as record_error:
                if _is_transient(record_error):
                    raise
                dropped += 1
                self.stats.dropped += 1
                logger.error(
                    "dropped a %s record the database refused: %s",
                    _describe(single),
                    getattr(record_error, "orig", record_error),
                )
        logger.error("stored the rest of the batch; %d record(s) dropped", dropped)

    def _drain_into(self, batch: _Batch) -> None:
        queue = self._queue
        flow_runs, task_runs = batch.flow_runs, batch.task_runs
        while queue:
            item = queue.popleft()
            if isinstance(item, _FlushMarker):
                batch.markers.append(item)
                continue
            kind, row = item
            if kind == _FLOW_RUN:
                flow_runs[row["id"]] = row
            elif kind == _TASK_RUN:
                task_runs[row["id"]] = row
            elif kind == _LOG:
                batch.logs.append(row)
            elif kind == _EDGE:
                batch.edges[(row["upstream_id"], row["downstream_id"])] = row
            elif kind == _FLOW:
                batch.flows[row["name"]] = row
            elif kind == _OFFSETS:
                rows, on_commit = row
                for offset_row in rows:
                    key = (offset_row["group_id"], offset_row["topic"], offset_row["partition"])
                    batch.offsets[key] = offset_row
                if on_commit is not None:
                    batch.commit_hooks.append(on_commit)
            elif kind == _WORKER:
                batch.workers[row["id"]] = row
            elif kind == _SOURCE_STATUS:
                batch.source_status[(row["worker_id"], row["subscription"])] = row
            elif kind == _IDEMPOTENCY:
                batch.idempotency.append(row)

    async def _commit(self, batch: _Batch) -> None:
        assert self._engine is not None
        started = time.perf_counter()
        count = batch.record_count()
        if self._sqlite is not None:
            # In this thread, not through aiosqlite's: every hand-off between
            # threads waits for the GIL, and a batch would take several.
            with self._sqlite.begin() as conn:
                _write_batch(conn, batch)
        else:
            async with self._engine.begin() as conn:
                await conn.run_sync(_write_batch, batch)
        self.stats.batches += 1
        self.stats.records += count
        self.stats.last_batch_records = count
        self.stats.last_batch_seconds = seconds = time.perf_counter() - started
        self._timings.append((seconds, count))

    @staticmethod
    def _settle_markers(batch: _Batch, error: BaseException | None) -> None:
        """Wake the flush callers: one thread-safe call per event loop, not per caller."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for marker in batch.markers:
            if marker.loop is None:
                _settle(marker.future, error)
            else:
                by_loop.setdefault(marker.loop, []).append(marker.future)  # type: ignore[arg-type]
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_settle_all, futures, error)
        batch.markers.clear()


class _Upsert:
    """One table's INSERT ... ON CONFLICT, rendered once, executed with plain tuples.

    Rows skip SQLAlchemy's per-value processing, the writer's hottest cost: the
    driver gets tuples in column order. Timestamps (epoch floats in rows) become
    `datetime`s for PostgreSQL and stay floats for SQLite (see `Timestamp`).
    SQLite gets many rows per statement: `sqlite3` releases the GIL around each
    statement it steps, and one release per row would hand the GIL back and forth
    with the event loop thread hundreds of times a batch.
    """

    def __init__(
        self, table: sa.Table, keys: tuple[str, ...], update: tuple[str, ...] | None
    ) -> None:
        self.table = table
        self.columns = tuple(c.name for c in table.columns if c.autoincrement is not True)
        self.keys = keys
        if update is None:
            update = tuple(c for c in self.columns if c not in keys and c != "created_at")
        self.update = update
        self.timestamp_positions = tuple(
            i for i, c in enumerate(self.columns) if isinstance(table.c[c].type, Timestamp)
        )
        self.rows_per_statement = max(1, min(500, 30_000 // len(self.columns)))
        self._sql: dict[tuple[str, int], str] = {}

    def sql(self, dialect: sa.Dialect, rows: int = 1) -> str:
        text = self._sql.get((dialect.name, rows))
        if text is None:
            text = self._render(dialect, rows)
            if rows in (1, self.rows_per_statement):
                self._sql[(dialect.name, rows)] = text
        return text

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
        return f"{text} ON CONFLICT ({conflict}) DO UPDATE SET {updates}"

    def execute(self, conn: sa.Connection, rows: Iterable[Row]) -> None:
        dialect = conn.dialect
        columns = self.columns
        if dialect.name == "sqlite":
            chunk = self.rows_per_statement
            values = [row.get(c) for row in rows for c in columns]
            step = chunk * len(columns)
            for start in range(0, len(values), step):
                params = tuple(values[start : start + step])
                statement = self.sql(dialect, len(params) // len(columns))
                conn.exec_driver_sql(statement, params)
            return
        positions = self.timestamp_positions
        tuples = []
        for row in rows:
            row_values = [row.get(c) for c in columns]
            for i in positions:
                value = row_values[i]
                if value is not None:
                    row_values[i] = _utc_datetime(value)
            tuples.append(tuple(row_values))
        conn.exec_driver_sql(self.sql(dialect), tuples)


def _utc_datetime(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _write_batch(conn: sa.Connection, batch: _Batch) -> None:
    if batch.flows:
        _FLOWS.execute(conn, batch.flows.values())
    if batch.flow_runs:
        _FLOW_RUNS.execute(conn, batch.flow_runs.values())
    if batch.task_runs:
        _TASK_RUNS.execute(conn, batch.task_runs.values())
    if batch.edges:
        _EDGES.execute(conn, batch.edges.values())
    if batch.logs:
        _LOGS.execute(conn, batch.logs)
    if batch.offsets:
        _OFFSETS_UPSERT.execute(conn, batch.offsets.values())
    if batch.workers:
        _WORKERS.execute(conn, batch.workers.values())
    if batch.source_status:
        _SOURCE_STATUS_UPSERT.execute(conn, batch.source_status.values())
    if batch.idempotency:
        conn.execute(_SETTLE_CLAIM, batch.idempotency)


_FLOWS = _Upsert(schema.flows, ("name",), ("version",))
_FLOW_RUNS = _Upsert(schema.flow_runs, ("id",), None)
_TASK_RUNS = _Upsert(schema.task_runs, ("id",), None)
_EDGES = _Upsert(schema.task_run_edges, ("upstream_id", "downstream_id"), ())
_LOGS = _Upsert(schema.logs, (), None)
_WORKERS = _Upsert(schema.workers, ("id",), ("heartbeat_at", "stopped_at"))
_SOURCE_STATUS_UPSERT = _Upsert(schema.source_status, ("worker_id", "subscription"), None)
_OFFSETS_UPSERT = _Upsert(
    schema.consumer_offsets, ("group_id", "topic", "partition"), ("next_offset", "updated_at")
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


def _settle(
    future: asyncio.Future[None] | concurrent.futures.Future[None], error: BaseException | None
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _settle_all(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _settle(future, error)
