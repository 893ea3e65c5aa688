"""lineage: datasets with their freshness, and which flows read and write them

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("name", sa.String(500), primary_key=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("last_at", Timestamp()),
        sa.Column("due_at", Timestamp()),
        sa.Column("declared_at", Timestamp(), nullable=False),
        sa.Column("late_since", Timestamp()),
        sa.Column("updated_at", Timestamp(), nullable=False),
    )
    op.create_table(
        "lineage_edges",
        sa.Column("flow_name", sa.String(200), primary_key=True),
        sa.Column("dataset", sa.String(500), primary_key=True),
        sa.Column("direction", sa.String(8), primary_key=True),
        sa.Column("declared_at", Timestamp(), nullable=False),
        sa.Column("expect_seconds", sa.Float),
    )


def downgrade() -> None:
    op.drop_table("lineage_edges")
    op.drop_table("datasets")
