"""source state: a subscription's liveness (running, reconnecting, stalled, stopped), partitions

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source_status") as batch:
        batch.add_column(
            sa.Column("state", sa.String(16), nullable=False, server_default="running")
        )
        batch.add_column(sa.Column("state_since", Timestamp()))
        batch.add_column(
            sa.Column("store_up", sa.Boolean, nullable=False, server_default=sa.true())
        )
        batch.add_column(sa.Column("partitions", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("source_status") as batch:
        batch.drop_column("partitions")
        batch.drop_column("store_up")
        batch.drop_column("state_since")
        batch.drop_column("state")
