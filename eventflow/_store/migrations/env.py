"""Alembic environment: eventflow always hands it an open connection."""

from __future__ import annotations

from alembic import context

from eventflow._store._schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only reachable from the alembic CLI without eventflow
    raise RuntimeError("run migrations with `eventflow db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
