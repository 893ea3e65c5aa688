"""Alembic migrations, applied programmatically (no alembic.ini needed)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from .._errors import StoreError, StoreNotInitialisedError
from .._settings import normalize_database_url
from ._engine import check_sqlite_directory, make_engine, sqlite_path

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The newest migration's revision, what `upgrade` brings a store to."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema at `database_url` to `revision` (blocking).

    Workers starting together take turns: PostgreSQL through an advisory lock,
    SQLite through a lock file beside the database. Called on an event loop
    thread it does the work on a thread of its own; in async code prefer
    `await asyncio.to_thread(upgrade, url)`.
    """
    check_sqlite_directory(database_url)
    with _sqlite_file_lock(database_url):
        _run_blocking(_upgrade(database_url, revision))


async def ensure_initialised(database_url: str) -> None:
    """Raise StoreNotInitialisedError unless the store has eventflow's schema.

    Never creates anything: a SQLite file that does not exist is not opened.
    """
    path = sqlite_path(database_url)
    if path is not None and not path.is_file():
        raise _not_initialised(str(path))
    engine = make_engine(database_url)
    where = str(path) if path is not None else make_url(database_url).render_as_string()
    try:
        async with engine.connect() as conn:
            revision = await conn.run_sync(_read_revision_if_any)
    except (OSError, DBAPIError) as error:
        cause = getattr(error, "orig", None) or error
        raise StoreError(
            f"cannot reach the store at {where}: {str(cause).strip().splitlines()[0]} "
            "(is the database running, and is EVENTFLOW_DATABASE_URL right?)"
        ) from error
    finally:
        await engine.dispose()
    if revision is None:
        raise _not_initialised(where)


def _not_initialised(where: str) -> StoreNotInitialisedError:
    return StoreNotInitialisedError(
        f"no eventflow store at {where} yet (nothing has run with this EVENTFLOW_DATABASE_URL): "
        "start a worker with `eventflow run app.py:app`, or create it with `eventflow db upgrade`"
    )


def _read_revision_if_any(connection: Connection) -> str | None:
    from sqlalchemy import inspect

    if not inspect(connection).has_table("alembic_version"):
        return None
    return _read_revision(connection)


@contextlib.contextmanager
def _sqlite_file_lock(database_url: str) -> Iterator[None]:
    url = make_url(normalize_database_url(database_url))
    path = url.database
    if not url.drivername.startswith("sqlite") or not path or path == ":memory:":
        yield
        return
    lock_path = Path(path).with_name(Path(path).name + ".migrate-lock")
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


async def _upgrade(database_url: str, revision: str) -> None:
    engine = make_engine(database_url, statement_timeout=None)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run_upgrade, revision)
    finally:
        await engine.dispose()


def _run_upgrade(connection: Connection, revision: str) -> None:
    if connection.dialect.name == "postgresql":
        # concurrent workers starting together take turns; the lock ends with the transaction
        connection.execute(text("SELECT pg_advisory_xact_lock(7411390)"))
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def current_revision(database_url: str) -> str | None:
    async def read() -> str | None:
        engine = make_engine(database_url, statement_timeout=None)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_read_revision)
        finally:
            await engine.dispose()

    return _run_blocking(read())


def _read_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()
