from __future__ import annotations

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from eventflow._store._engine import make_engine
from eventflow._store._migrate import current_revision, head_revision, upgrade
from eventflow._store._schema import POSTGRESQL_INDEXES, metadata


def _not_postgresql_only(obj: object, name: str | None, kind: str, *_: object) -> bool:
    return not (kind == "index" and name in POSTGRESQL_INDEXES)


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"include_object": _not_postgresql_only})
    return list(compare_metadata(context, metadata))


def test_migrations_create_exactly_the_schema_the_code_uses(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # applying twice is harmless
    assert current_revision(database_url) == head_revision()

    async def diff() -> list[object]:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(_differences)
        finally:
            await engine.dispose()

    assert asyncio.run(diff()) == []
