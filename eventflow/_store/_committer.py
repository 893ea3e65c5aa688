"""Where the writer's batches are written: in its own thread, or in a child process.

A worker streaming thousands of runs a second spends most of its store time
handing values to the database driver. In the worker process that time holds
the GIL the event loop needs; in a child process it runs beside the loop on
another core (bench/_eventflow_kafka.py: 14.4k -> 17.0k events/s on two cores).
The writer thread then only coalesces records and pickles each batch.

The child is `python -m eventflow._store._write_process FD`, talking over a
socket pair: the parent sends the database URL first (never on a command line,
where `ps` shows passwords), then one pickled batch per commit, and waits for
one reply per batch. The child ignores SIGINT and SIGTERM (the worker decides
when to stop) and exits when the socket closes, so it never outlives a worker
killed with `kill -9`. If the child dies, the batch fails as a transient error,
the writer retries it as it would after a lost connection, and a new child
starts (unless something in the batch keeps killing it: see
`ProcessCommitter.deaths_before_salvage`).
"""

from __future__ import annotations

import logging
import pickle
import socket
import struct
import subprocess
import sys
from typing import IO, Any, Protocol

from .._errors import StoreError
from .._settings import normalize_database_url
from ._batch import RECORD_FIELDS, Batch, RemoteWriteError, is_transient, write_batch
from ._engine import is_sqlite, make_sync_engine

logger = logging.getLogger("eventflow.store")

_HEADER = struct.Struct("<Q")
"""Every message: its length, then a pickle."""


class Committer(Protocol):
    """Writes one batch in one transaction, or raises; the tokens of records it left out
    for their fence (eventflow/_store/_fences.py) end up in `batch.fenced`."""

    async def commit(self, batch: Batch) -> None: ...

    async def close(self) -> None: ...


class LocalCommitter:
    """Writes in the calling thread: SQLite through `sqlite3`, PostgreSQL through asyncpg."""

    def __init__(self, database_url: str) -> None:
        # sqlite3 in this thread, not aiosqlite's: every hand-off between threads
        # waits for the GIL, and a batch would take several.
        self._sqlite = make_sync_engine(database_url) if is_sqlite(database_url) else None
        self._postgres = None
        if self._sqlite is None:
            from ._pg_writes import PostgresWriter  # asyncpg: installed with eventflow[postgres]

            self._postgres = PostgresWriter(database_url)

    async def commit(self, batch: Batch) -> None:
        if self._sqlite is not None:
            with self._sqlite.begin() as conn:
                write_batch(conn, batch)
        else:
            assert self._postgres is not None
            await self._postgres.commit(batch)

    async def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.dispose()
        if self._postgres is not None:
            await self._postgres.close()


class ProcessCommitter:
    """Writes in a child process; `commit` blocks the writer thread, never the worker's loop."""

    deaths_before_salvage = 3
    """A batch during which the child died this many times in a row is treated as
    refused for its data (something in it may kill the child): the writer then
    writes it record by record. A record alone that kills the child again is
    refused, and dropped; anything else is retried as after a lost connection."""

    def __init__(self, database_url: str) -> None:
        # normalized here: an in-memory URL must name the parent's store, not the child's
        self.database_url = normalize_database_url(database_url)
        self._child: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._reader: IO[bytes] | None = None
        self._deaths = 0
        self._suspects: set[int] = set()
        """Records (by id) of batches during which the child died, not written since."""
        # now, not at the first commit: a child that cannot start is an error of
        # the worker's start, and the first batch does not wait for its imports
        self._start()

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    async def commit(self, batch: Batch) -> None:
        try:
            payload = pickle.dumps(batch.records(), pickle.HIGHEST_PROTOCOL)
        except Exception as error:  # a value that cannot be sent is about the data
            raise RemoteWriteError(f"cannot send the batch: {error}", transient=False) from None
        if self._socket is None:
            try:
                self._start()
            except StoreError as error:
                raise RemoteWriteError(str(error), transient=True) from None
        assert self._socket is not None and self._reader is not None
        try:
            send_pickled(self._socket, payload)
            reply = receive(self._reader)
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            code = self._stop()
            raise RemoteWriteError(
                f"the writer process exited (code {code}) during a batch: {error}",
                transient=self._died_during(batch),
            ) from None
        self._deaths = 0
        if self._suspects:
            self._suspects.difference_update(_record_ids(batch))
        if isinstance(reply, tuple):
            transient, message = reply
            raise RemoteWriteError(message, transient=transient)
        if reply:
            batch.fenced |= reply  # records the store refused for their fencing tokens

    def _died_during(self, batch: Batch) -> bool:
        """Count the child's death; whether the batch is worth retrying as it is."""
        self._deaths += 1
        records = _record_ids(batch)
        if len(records) == 1 and records <= self._suspects:
            self._suspects -= records  # it killed the child alone, after in a batch
            return False
        self._suspects |= records
        return self._deaths < self.deaths_before_salvage

    def _start(self) -> None:
        """Start a child and wait until it is ready; StoreError if it cannot start."""
        ours, theirs = socket.socketpair()
        reader: IO[bytes] | None = None
        try:
            with theirs:
                self._child = subprocess.Popen(
                    [sys.executable, "-m", "eventflow._store._write_process", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()],
                    stdin=subprocess.DEVNULL,
                )
            reader = ours.makefile("rb")
            send(ours, self.database_url)
            ready = receive(reader)
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            if reader is not None:
                reader.close()
            ours.close()
            code = self._stop()
            raise StoreError(f"the writer process did not start (code {code}): {error}") from None
        self._socket, self._reader = ours, reader
        if ready is not None:
            self._stop()
            raise StoreError(f"the writer process did not start: {ready}")

    def _stop(self, timeout: float = 10.0) -> int | None:
        """Close the socket (the child's cue to exit) and reap the child."""
        if self._reader is not None:
            self._reader.close()
        if self._socket is not None:
            self._socket.close()
        self._socket = self._reader = None
        child, self._child = self._child, None
        if child is None:
            return None
        try:
            return child.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("the writer process did not exit; killing it")
            child.kill()
            return child.wait()

    async def close(self) -> None:
        self._stop()


def _record_ids(batch: Batch) -> set[int]:
    records = (getattr(batch, name) for name in RECORD_FIELDS)
    return {
        id(row) for rows in records for row in (rows.values() if isinstance(rows, dict) else rows)
    }


def send(sock: socket.socket, message: object) -> None:
    send_pickled(sock, pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def send_pickled(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(_HEADER.pack(len(payload)) + payload)


def receive(reader: IO[bytes]) -> Any:
    """The next message, unpickled; EOFError once the other side has closed."""
    return pickle.loads(receive_pickled(reader))


def receive_pickled(reader: IO[bytes]) -> bytes:
    header = reader.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError("connection closed")
    (size,) = _HEADER.unpack(header)
    body = reader.read(size)
    if len(body) < size:
        raise EOFError("connection closed mid-message")
    return body


def error_reply(error: BaseException) -> tuple[bool, str]:
    """What the writer process answers for a batch it could not write."""
    orig = getattr(error, "orig", None)
    return is_transient(error), str(orig if isinstance(orig, BaseException) else error)
