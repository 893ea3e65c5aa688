"""flow controls: idempotency claims, and runs linked to the run they defer to

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TIMESTAMP = Timestamp()


def upgrade() -> None:
    op.add_column("flow_runs", sa.Column("linked_run_id", sa.String(32)))
    op.create_table(
        "idempotency_keys",
        sa.Column("flow_name", sa.String(200), primary_key=True),
        sa.Column("key", sa.String(500), primary_key=True),
        sa.Column("run_id", sa.String(32), nullable=False),
        sa.Column("worker_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("claimed_at", TIMESTAMP, nullable=False),
        sa.Column("completed_at", TIMESTAMP),
    )


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("linked_run_id")
