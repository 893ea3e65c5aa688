"""RunWriter: every run record goes through here, batched into group commits.

Callers on any thread append records to a queue without waiting; a dedicated
thread with its own event loop drains the queue every `flush_interval` (or at
once when someone awaits `flush()`), coalesces the records by run id so a run
that started and finished within one interval is one row, and writes the lot in
one transaction. Being on its own thread, the store serves sync callers,
user event loops and the worker's loop alike and never blocks any of them.
The transaction itself is a committer's (eventflow/_store/_committer.py):
this thread's, or, in workers, a child process's.

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import StoreError, describe_error
from .._retries import Backoff
from ._batch import Batch, Row, describe, is_transient
from ._committer import Committer, LocalCommitter, ProcessCommitter
from ._fences import FenceWatch, Token

logger = logging.getLogger("eventflow.store")

STORE_RETRY = Backoff(initial=0.05, maximum=2.0, jitter=0.0)
"""Between attempts to commit a batch while the run store is away."""


@dataclass(slots=True)
class _FlushMarker:
    """Placed in the queue by `flush()`: resolved once everything before it is committed.

    `future` belongs to `loop` (an async caller) or is a concurrent future (`loop`
    is None, a blocking caller).
    """

    future: asyncio.Future[None] | concurrent.futures.Future[None]
    loop: asyncio.AbstractEventLoop | None


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


class RunWriter:
    """Batched, idempotent writes of runs, task runs, edges, logs and offsets."""

    def __init__(
        self, database_url: str, *, flush_interval: float = 0.05, process: bool = False
    ) -> None:
        self.database_url = database_url
        self.flush_interval = flush_interval
        self.process = process
        """Write from a child process (see eventflow/_store/_committer.py)."""
        self.healthy = True
        self.healthy_since = time.time()
        self.last_error: str | None = None
        self.stats = WriterStats()
        self._timings: deque[tuple[float, int]] = deque(maxlen=10_000)
        self._in_commit = 0
        self._queue: deque[_FlushMarker | tuple[Callable[[Batch, Any], None], Any]] = deque()
        """Records with the `Batch` method that adds them, and flush markers, in order."""
        # the hot records in deques of their own: no (method, row) tuple per record
        self._flow_runs: deque[Row] = deque()
        self._task_runs: deque[Row] = deque()
        self._known_flows: set[str] = set()
        self._wake_pending = False
        self._idle = False
        self._closing = False
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._committer: Committer | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._start_lock = threading.Lock()
        self.fences = FenceWatch()
        """The claims whose records go through here (eventflow/_store/_fences.py)."""

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
        return len(self._queue) + len(self._flow_runs) + len(self._task_runs) + self._in_commit

    def take_batch_timings(self) -> list[tuple[float, int]]:
        """(seconds, records) of the group commits since the last call, for metrics."""
        timings = self._timings
        return [timings.popleft() for _ in range(len(timings))]

    # -- producers (any thread, never block) ----------------------------------------

    def ensure_flow(self, name: str, version: str | None) -> None:
        if name not in self._known_flows:
            self._known_flows.add(name)
            row = {"name": name, "version": version, "created_at": time.time()}
            self._queue.append((Batch.add_flow, row))

    def put_flow_run(self, row: Row) -> None:
        """The run's row as it is now: a copy, since its owner goes on changing the row
        (the next state) while the writer's thread reads and pickles this one."""
        self._flow_runs.append(row.copy())

    def put_task_run(self, row: Row) -> None:
        """The task run's row as it is now (a copy, as `put_flow_run`)."""
        self._task_runs.append(row.copy())

    # The other records are built for the call and never changed after it: handed over.

    def put_edge(self, row: Row) -> None:
        self._queue.append((Batch.add_edge, row))

    def put_log(self, row: Row) -> None:
        self._queue.append((Batch.add_log, row))

    def put_worker(self, row: Row) -> None:
        """A worker's registration or heartbeat (id, hostname, pid, started_at, heartbeat_at)."""
        self._queue.append((Batch.add_worker, row))

    def put_source_status(self, row: Row) -> None:
        """A subscription's live counters (a `source_status` row), for the API and UI."""
        self._queue.append((Batch.add_source_status, row))

    def put_idempotency(self, row: Row) -> None:
        """Settle a claim (flow_name, key, run_id, state, completed_at) in the run's transaction.

        Only the claim's holder changes it: a claim another run took over is left alone.
        """
        self._queue.append((Batch.add_idempotency, {f"b_{k}": v for k, v in row.items()}))

    def put_checkpoint(
        self, subscription: str, source: str, value: str, fence: Token | None = None
    ) -> None:
        """Where `subscription`'s source resumes, in the transaction of the records before."""
        row = {"subscription": subscription, "source": source, "value": value, "fence": fence}
        self._queue.append((Batch.add_checkpoint, {**row, "updated_at": time.time()}))

    def put_offsets(
        self,
        group_id: str,
        offsets: Iterable[tuple[str, int, int]],
        on_commit: Callable[[], None] | None = None,
        fences: Mapping[tuple[str, int], Token] | None = None,
    ) -> None:
        """Store `(topic, partition, next_offset)` in the transaction of the runs queued before.

        An offset whose fence (by partition, in `fences`) is no longer current
        is not stored. `on_commit` runs on the writer thread once that
        transaction has committed.
        """
        now = time.time()
        fences = fences or {}
        rows = [
            {
                "group_id": group_id,
                "topic": t,
                "partition": p,
                "next_offset": o,
                "updated_at": now,
                "fence": fences.get((t, p)),
            }
            for t, p, o in offsets
        ]
        self._queue.append((Batch.add_offsets, (rows, on_commit)))

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
            self._committer = (
                ProcessCommitter(self.database_url)
                if self.process
                else LocalCommitter(self.database_url)
            )
        except BaseException as error:
            self._start_error = error
            self._ready.set()
            return
        self._ready.set()
        batch = Batch()
        failures = 0
        try:
            while True:
                self._idle = True  # before looking at the queue: see _request_wake
                if (
                    not self._queue
                    and not self._flow_runs
                    and not self._task_runs
                    and batch.record_count() == 0
                    and not batch.markers
                ):
                    if self._closing:
                        break
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self.flush_interval)
                self._idle = False
                self._wake.clear()
                self._wake_pending = False
                self._drain_into(batch)
                if batch.record_count() == 0 and not batch.commit_hooks:
                    self._resolve_markers(batch, None)
                    continue
                self._in_commit = batch.record_count()
                try:
                    await self._commit(batch)
                except Exception as error:
                    self.stats.failures += 1
                    if not is_transient(error):
                        try:
                            await self._commit_salvaging(batch, error)
                        except Exception as salvage_error:  # the database went away meanwhile
                            error = salvage_error
                        else:
                            self._committed(batch)
                            batch = Batch()
                            continue
                    if self.healthy:
                        logger.warning("run store unavailable, retrying: %s", describe_error(error))
                    self.healthy = False
                    self.last_error = describe_error(error)
                    failures += 1
                    await asyncio.sleep(STORE_RETRY.delay(failures))
                    continue
                failures = 0
                self._committed(batch)
                batch = Batch()
        finally:
            await self._committer.close()

    def _committed(self, batch: Batch) -> None:
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
        self._resolve_markers(batch, None)

    async def _commit_salvaging(self, batch: Batch, error: BaseException) -> None:
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
                if is_transient(record_error):
                    raise
                dropped += 1
                self.stats.dropped += 1
                logger.error(
                    "dropped a %s record the database refused: %s",
                    describe(single),
                    getattr(record_error, "orig", record_error),
                )
        logger.error("stored the rest of the batch; %d record(s) dropped", dropped)

    def _drain_into(self, batch: Batch) -> None:
        """Move the queued records into `batch`, coalescing runs by id.

        The general queue first, then the run deques to their end: a flush
        marker or offsets are then always in the batch of every run record put
        before them (appends to a deque are atomic; the producer's order holds).
        """
        queue = self._queue
        while queue:
            item = queue.popleft()
            if isinstance(item, _FlushMarker):
                batch.markers.append(item)
            else:
                add, record = item
                add(batch, record)
        for runs, into in ((self._flow_runs, batch.flow_runs), (self._task_runs, batch.task_runs)):
            while runs:
                row = runs.popleft()
                into[row["id"]] = row

    async def _commit(self, batch: Batch) -> None:
        assert self._committer is not None
        started = time.perf_counter()
        self.fences.before_commit(batch)
        count = batch.record_count()
        await self._committer.commit(batch)
        if batch.fenced:
            self.fences.refused(batch.fenced)
        self.stats.batches += 1
        self.stats.records += count
        self.stats.last_batch_records = count
        self.stats.last_batch_seconds = seconds = time.perf_counter() - started
        self._timings.append((seconds, count))

    @staticmethod
    def _resolve_markers(batch: Batch, error: BaseException | None) -> None:
        """Wake the flush callers: one thread-safe call per event loop, not per caller."""
        by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
        for marker in batch.markers:
            if marker.loop is None:
                _resolve(marker.future, error)
            else:
                by_loop.setdefault(marker.loop, []).append(marker.future)
        for loop, futures in by_loop.items():
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
                loop.call_soon_threadsafe(_resolve_all, futures, error)
        batch.markers.clear()


def _resolve(
    future: asyncio.Future[None] | concurrent.futures.Future[None], error: BaseException | None
) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _resolve_all(futures: list[asyncio.Future[None]], error: BaseException | None) -> None:
    for future in futures:
        _resolve(future, error)
