"""Creating SQLAlchemy async engines with the settings each database needs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .._errors import ConfigurationError
from .._extras import require
from .._settings import check_database_url, normalize_database_url

POSTGRES_SESSION_BOUNDS = {
    # a transaction left open by a worker that froze or whose host vanished ends
    # here, and with it the row locks every other worker's writes would wait on
    "idle_in_transaction_session_timeout": "10000",
    # a statement waits at most this for a lock: the batch or claim is retried, and
    # says what it waited for, instead of hanging behind a dead session
    "lock_timeout": "5000",
    # the server notices a peer that vanished (no FIN, no RST) after 5 + 3 x 3 s of
    # silence, or 15 s of unacknowledged data, not 2 hours
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "3",
    "tcp_keepalives_count": "3",
    "tcp_user_timeout": "15000",
}
"""Settings of every PostgreSQL session a worker, server or CLI opens (not migrations'),
with a server-side `statement_timeout` (a frozen client, stopped in the middle of a
statement such as a COPY, is alive to TCP: only the server's own clock ends that
statement). One frozen or vanished worker holds the others' locks for 30 s at most
(docs/guarantees.md)."""


def session_bounds(statement_timeout: float) -> dict[str, str]:
    """`POSTGRES_SESSION_BOUNDS` with a server-side bound on each statement."""
    return {**POSTGRES_SESSION_BOUNDS, "statement_timeout": str(round(statement_timeout * 1000))}


def is_sqlite(url: str) -> bool:
    return normalize_database_url(url).startswith("sqlite")


def make_engine(url: str, *, statement_timeout: float | None = 60.0, **kwargs: Any) -> AsyncEngine:
    """An async engine; SQLite gets WAL, relaxed fsync and a generous busy timeout.

    PostgreSQL connections get a bound on connecting (10 s) and on each statement
    (`statement_timeout` seconds, asyncpg cancels it; None for migrations, whose
    index builds may take long): a database that hangs cannot hang a worker.

    WAL with `synchronous=NORMAL` keeps every commit durable against a crash of
    the process (what a worker's `kill -9` is) while sparing an fsync per group
    commit; several worker processes can then write to one file.
    """
    url = check_database_url(url, "database_url")
    kwargs.setdefault("hide_parameters", True)  # errors must not log payloads and secrets
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30}, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    require("asyncpg", "postgres", "a PostgreSQL store")
    kwargs.setdefault("pool_pre_ping", True)
    connect_args: dict[str, Any] = {"timeout": 10, "command_timeout": statement_timeout}
    if statement_timeout is not None:  # migrations wait for each other's locks
        connect_args["server_settings"] = session_bounds(statement_timeout)
    kwargs.setdefault("connect_args", connect_args)
    return create_async_engine(url, **kwargs)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store (None: not SQLite, or in memory)."""
    parsed = make_url(normalize_database_url(url))
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def check_sqlite_directory(url: str) -> None:
    """Refuse a SQLite file whose directory is missing, rather than create it silently."""
    path = sqlite_path(url)
    if path is None:
        return
    parent = path.absolute().parent
    for ancestor in (parent, *parent.parents):
        if ancestor.exists() and not ancestor.is_dir():
            raise ConfigurationError(
                f"the SQLite store {path} cannot be created: {ancestor} is a file, not a directory"
            )
    if not parent.is_dir():
        raise ConfigurationError(
            f"the directory of the SQLite store {path} does not exist: "
            f"create it (mkdir -p {parent}) or point EVENTFLOW_DATABASE_URL elsewhere"
        )


def make_sync_engine(url: str) -> Engine:
    """A blocking engine on the standard `sqlite3` driver, for the writer thread.

    Its transactions start with `BEGIN IMMEDIATE`: they hold the file's write
    lock from their first statement, so the fencing tokens a batch reads first
    (eventflow/_store/_fences.py) cannot change before it commits. (`sqlite3`
    alone would begin the transaction only at the first write.)
    """
    url = normalize_database_url(url).replace("sqlite+aiosqlite:", "sqlite:", 1)
    engine = create_engine(
        url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True
    )
    event.listen(engine, "connect", _sqlite_pragmas)
    event.listen(engine, "connect", _driver_autocommit)
    event.listen(engine, "begin", _begin_immediate)
    return engine


def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # SQLAlchemy's "begin" event says BEGIN


def _begin_immediate(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
