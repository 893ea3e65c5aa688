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
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .._errors import StoreError
from . import _schema as schema
from ._engine import make_engine

logger = logging.getLogger("eventflow.store")

Row = dict[str, Any]
_TIMESTAMP_KEYS = ("created_at", "started_at", "ended_at", "timestamp", "updated_at")

_FLOW_RUN = 0
_TASK_RUN = 1
_EDGE = 2
_LOG = 3
_FLOW = 4
_OFFSETS = 5


@dataclass(slots=True)
class _FlushMarker:
    """Placed in the queue by `flush()`: resolved once everything before it is committed."""

    notify: Callable[[BaseException | None], None]


@dataclass(slots=True)
class _Batch:
    flows: dict[str, Row] = field(default_factory=dict)
    flow_runs: dict[str, Row] = field(default_factory=dict)
    task_runs: dict[str, Row] = field(default_factory=dict)
    edges: dict[tuple[str, str], Row] = field(default_factory=dict)
    logs: list[Row] = field(default_factory=list)
    offsets: dict[tuple[str, str, int], Row] = field(default_factory=dict)
    markers: list[_FlushMarker] = field(default_factory=list)
    commit_hooks: list[Callable[[], None]] = field(default_factory=list)

    def record_count(self) -> int:
        return (
            len(self.flows)
            + len(self.flow_runs)
            + len(self.task_runs)
            + len(self.edges)
            + len(self.logs)
            + len(self.offsets)
        )


@dataclass(slots=True)
class WriterStats:
    """Counters a metrics exporter can read without locking."""

    batches: int = 0
    records: int = 0
    last_batch_records: int = 0
    last_batch_seconds: float = 0.0
    failures: int = 0


def _to_datetimes(row: Row) -> Row:
    for key in _TIMESTAMP_KEYS:
        value = row.get(key)
        if isinstance(value, float):
            row[key] = datetime.fromtimestamp(value, UTC)
    return row


def _is_transient(error: BaseException) -> bool:
    """Errors after which the same batch may well succeed: the database went away or is busy."""
    if isinstance(error, (OSError, ConnectionError, TimeoutError, sa.exc.TimeoutError)):
        return True
    if isinstance(error, sa.exc.DBAPIError):
        return bool(error.connection_invalidated) or isinstance(
            error, (sa.exc.OperationalError, sa.exc.InterfaceError)
        )
    return False


class RunWriter:
    """Batched, idempotent writes of runs, task runs, edges, logs and offsets."""

    def __init__(self, database_url: str, *, flush_interval: float = 0.05) -> None:
        self.database_url = database_url
        self.flush_interval = flush_interval
        self.healthy = True
        self.last_error: str | None = None
        self.stats = WriterStats()
        self._queue: deque[Any] = deque()
        self._known_flows: set[str] = set()
        self._wake_pending = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._engine: AsyncEngine | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._start_lock = threading.Lock()

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent); blocks until it is ready."""
        with self._start_lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._thread_main, name="eventflow-writer", daemon=True)
            self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise StoreError(f"cannot start the run writer: {self._start_error}") from self._start_error

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
        """Records queued and not yet handed to a commit."""
        return len(self._queue)

    # -- producers (any thread, never block) ----------------------------------------

    def ensure_flow(self, name: str, version: str | None) -> None:
        if name not in self._known_flows:
            self._known_flows.add(name)
            self._queue.append((_FLOW, {"name": name, "version": version, "created_at": time.time()}))

    def put_flow_run(self, row: Row) -> None:
        self._queue.append((_FLOW_RUN, row))

    def put_task_run(self, row: Row) -> None:
        self._queue.append((_TASK_RUN, row))

    def put_edge(self, row: Row) -> None:
        self._queue.append((_EDGE, row))

    def put_log(self, row: Row) -> None:
        self._queue.append((_LOG, row))

    def put_offsets(
        self, group_id: str, offsets: Iterable[tuple[str, int, int]], on_commit: Callable[[], None] | None = None
    ) -> None:
        """Store `(topic, partition, next_offset)` in the same transaction as the runs queued before.

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

        def notify(error: BaseException | None) -> None:
            loop.call_soon_threadsafe(_settle, future, error)

        self._queue.append(_FlushMarker(notify))
        self._request_wake()
        await future

    def flush_blocking(self, timeout: float | None = None) -> None:
        """`flush()` for sync callers; never call it on an event loop thread."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def notify(error: BaseException | None) -> None:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        self._queue.append(_FlushMarker(notify))
        self._request_wake()
        future.result(timeout)

    def _request_wake(self) -> None:
        if self._wake_pending or self._loop is None or self._wake is None:
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake.set)
        except RuntimeError:  # the writer loop already stopped
            pass

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
        except BaseException as error:
            self._start_error = error
            self._ready.set()
            return
        self._ready.set()
        batch = _Batch()
        backoff = 0.05
        try:
            while True:
                if not self._queue and batch.record_count() == 0 and not batch.markers:
                    if self._closing:
                        break
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                    except TimeoutError:
                        pass
                self._wake.clear()
                self._wake_pending = False
                self._drain_into(batch)
                if batch.record_count() == 0 and not batch.commit_hooks:
                    self._settle_markers(batch, None)
                    continue
                try:
                    await self._commit(batch)
                except Exception as error:
                    self.stats.failures += 1
                    if not _is_transient(error):
                        logger.error("dropping a batch of %d records the database refused: %s",
                                     batch.record_count(), error)
                        self._settle_markers(batch, StoreError(f"the database refused a batch: {error}"))
                        batch = _Batch()
                        continue
                    if self.healthy:
                        logger.warning("run store unavailable, retrying: %s", error)
                    self.healthy = False
                    self.last_error = str(error)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 2.0)
                    continue
                if not self.healthy:
                    logger.warning("run store available again")
                self.healthy = True
                self.last_error = None
                backoff = 0.05
                for hook in batch.commit_hooks:
                    try:
                        hook()
                    except Exception:
                        logger.exception("an on-commit hook failed")
                self._settle_markers(batch, None)
                batch = _Batch()
        finally:
            await self._engine.dispose()

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

    async def _commit(self, batch: _Batch) -> None:
        assert self._engine is not None
        started = time.perf_counter()
        count = batch.record_count()
        async with self._engine.begin() as conn:
            if batch.flows:
                await _upsert(conn, schema.flows, ["name"], _rows(batch.flows.values()), update=("version",))
            if batch.flow_runs:
                await _upsert(conn, schema.flow_runs, ["id"], _rows(batch.flow_runs.values()))
            if batch.task_runs:
                await _upsert(conn, schema.task_runs, ["id"], _rows(batch.task_runs.values()))
            if batch.edges:
                await _upsert(
                    conn, schema.task_run_edges, ["upstream_id", "downstream_id"],
                    list(batch.edges.values()), update=(),
                )
            if batch.logs:
                await conn.execute(schema.logs.insert(), _rows(batch.logs))
            if batch.offsets:
                await _upsert(
                    conn, schema.consumer_offsets, ["group_id", "topic", "partition"],
                    _rows(batch.offsets.values()), update=("next_offset", "updated_at"),
                )
        self.stats.batches += 1
        self.stats.records += count
        self.stats.last_batch_records = count
        self.stats.last_batch_seconds = time.perf_counter() - started

    @staticmethod
    def _settle_markers(batch: _Batch, error: BaseException | None) -> None:
        for marker in batch.markers:
            marker.notify(error)
        batch.markers.clear()


def _rows(rows: Iterable[Row]) -> list[Row]:
    return [_to_datetimes(dict(row)) for row in rows]


_statement_cache: dict[tuple[str, str, tuple[str, ...] | None, frozenset[str]], Any] = {}


async def _upsert(
    conn: AsyncConnection,
    table: sa.Table,
    keys: list[str],
    rows: list[Row],
    update: tuple[str, ...] | None = None,
) -> None:
    """INSERT ... ON CONFLICT DO UPDATE (or NOTHING when `update` is empty).

    `update=None` updates every column present in the rows but the keys and
    `created_at`, which keeps the first write's value.
    """
    dialect = conn.dialect.name
    columns = frozenset(rows[0])
    cache_key = (dialect, table.name, update, columns)
    statement = _statement_cache.get(cache_key)
    if statement is None:
        insert = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        if update is None:
            update = tuple(c for c in columns if c not in keys and c != "created_at")
        if update:
            statement = insert.on_conflict_do_update(
                index_elements=keys, set_={c: insert.excluded[c] for c in update}
            )
        else:
            statement = insert.on_conflict_do_nothing(index_elements=keys)
        _statement_cache[cache_key] = statement
    await conn.execute(statement, rows)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
