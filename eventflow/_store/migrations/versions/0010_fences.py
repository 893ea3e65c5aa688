"""fences: fencing tokens per worker lease and per consumer group partition; runs by
the run they resume (a crashed direct call is resumed once)

A worker claims each partition it is assigned (and its own lease) by moving
the scope's epoch; the writer's transaction refuses records whose token is no
longer current, so a worker that was frozen or cut off cannot write over its
successor (eventflow/_store/_fences.py).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fences",
        sa.Column("scope", sa.String(600), primary_key=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("holder", sa.String(64)),
        sa.Column("updated_at", Timestamp(), nullable=False),
    )
    where = sa.text("resumed_from IS NOT NULL")
    op.create_index(
        "ix_flow_runs_resumed_from",
        "flow_runs",
        ["resumed_from"],
        postgresql_where=where,
        sqlite_where=where,
    )


def downgrade() -> None:
    op.drop_index("ix_flow_runs_resumed_from", "flow_runs")
    op.drop_table("fences")
