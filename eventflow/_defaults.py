"""The process-wide store that direct flow calls (batch mode) record into.

Created on first use from `Settings.from_env()`: the schema is migrated, the
writer thread started, and an exit hook flushes what is still queued.

The process is then a worker of the store too (`BatchLease`): its row in
`workers`, with a heartbeat every fifth of `EVENTFLOW_WORKER_LEASE`, carries its
direct calls' runs. A batch job killed with `kill -9` stops heartbeating, and
the crash sweep of any worker (or of the job's next run, `_crashed_calls.py`)
ends its runs CRASHED instead of leaving them RUNNING for ever.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import socket
import threading
import time
import uuid
from typing import Any

from ._logging import configure_logging
from ._settings import Settings
from ._store._migrate import upgrade
from ._store._writer import RunWriter

_lock = threading.Lock()
_writer: RunWriter | None = None
_lease: BatchLease | None = None


class BatchLease:
    """A direct-call process's worker row, kept alive by a daemon thread."""

    def __init__(self, writer: RunWriter, lease_seconds: float) -> None:
        now = time.time()
        self.writer = writer
        self.lease_seconds = lease_seconds
        self.row: dict[str, Any] = {
            "id": f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}",
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": now,
            "heartbeat_at": now,
            "stopped_at": None,
        }
        self._stop = threading.Event()
        writer.put_worker(dict(self.row))
        self._thread = threading.Thread(target=self._beat, name="eventflow-heartbeat", daemon=True)
        self._thread.start()

    @property
    def worker_id(self) -> str:
        return str(self.row["id"])

    def _beat(self) -> None:
        while not self._stop.wait(self.lease_seconds / 5):
            self.writer.put_worker({**self.row, "heartbeat_at": time.time()})

    def stop(self) -> None:
        """The process ends cleanly: its row says so (nobody sweeps its runs)."""
        self._stop.set()
        now = time.time()
        self.writer.put_worker({**self.row, "heartbeat_at": now, "stopped_at": now})


def default_writer() -> RunWriter:
    """The default writer, created and started on first call (blocking)."""
    global _writer, _lease
    if _writer is None:
        with _lock:
            if _writer is None:
                settings = Settings.from_env()
                configure_logging(settings.log_format, settings.log_level)
                upgrade(settings.database_url)
                writer = RunWriter(settings.database_url, flush_interval=settings.flush_interval)
                writer.start()
                _lease = BatchLease(writer, settings.worker_lease)
                atexit.register(_close, writer, _lease)
                _writer = writer
    return _writer


def batch_lease() -> BatchLease | None:
    """The lease of this process's direct calls (None before the first)."""
    return _lease


def _close(writer: RunWriter, lease: BatchLease) -> None:
    lease.stop()
    writer.close()


async def default_writer_async() -> RunWriter:
    """`default_writer()` without blocking the caller's event loop on the first call."""
    if _writer is not None:
        return _writer
    return await asyncio.to_thread(default_writer)


def reset_default_writer() -> None:
    """Close the default writer so the next call builds one from the environment again."""
    global _writer, _lease
    with _lock:
        if _writer is not None:
            assert _lease is not None
            atexit.unregister(_close)
            _close(_writer, _lease)
            _writer = _lease = None
