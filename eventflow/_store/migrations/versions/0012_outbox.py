"""outbox: messages published from flows, written with their run's COMPLETED state

A relay per destination sends them in order (Kafka: in transactions) and marks
them published; retention deletes the published ones (eventflow/_outbox.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("message_id", sa.String(64), nullable=False, unique=True),
        sa.Column("destination", sa.String(300), nullable=False),
        sa.Column("flow_run_id", sa.String(32), nullable=False),
        sa.Column("key", sa.LargeBinary),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", sa.Text),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.Column("attempt", sa.BigInteger),
        sa.Column("published_at", Timestamp()),
    )
    pending = sa.text("published_at IS NULL")
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["destination", "seq"],
        postgresql_where=pending,
        sqlite_where=pending,
    )
    op.create_index("ix_outbox_published", "outbox", ["published_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_published", "outbox")
    op.drop_index("ix_outbox_pending", "outbox")
    op.drop_table("outbox")
