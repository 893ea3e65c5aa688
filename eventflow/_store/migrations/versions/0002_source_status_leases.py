"""source status (live state of each worker's subscriptions) and leases (one holder at a time)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TIMESTAMP = Timestamp()


def upgrade() -> None:
    op.create_table(
        "source_status",
        sa.Column("worker_id", sa.String(64), primary_key=True),
        sa.Column("subscription", sa.String(500), primary_key=True),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("flow_name", sa.String(200), nullable=False),
        sa.Column("received", sa.BigInteger, nullable=False),
        sa.Column("completed", sa.BigInteger, nullable=False),
        sa.Column("failed", sa.BigInteger, nullable=False),
        sa.Column("dead_lettered", sa.BigInteger, nullable=False),
        sa.Column("in_flight", sa.Integer, nullable=False),
        sa.Column("lag", sa.BigInteger),
        sa.Column("last_event_at", TIMESTAMP),
        sa.Column("last_error", sa.Text),
        sa.Column("last_error_at", TIMESTAMP),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(300), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_at", TIMESTAMP, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")
    op.drop_table("source_status")
