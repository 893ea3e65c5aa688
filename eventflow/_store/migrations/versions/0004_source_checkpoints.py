"""source checkpoints: where an unpartitioned source resumes after a restart

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "source_checkpoints",
        sa.Column("subscription", sa.String(500), primary_key=True),
        sa.Column("source", sa.String(300), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", Timestamp(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("source_checkpoints")
