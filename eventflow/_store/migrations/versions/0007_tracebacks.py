"""tracebacks: a failed flow run's and task run's bounded traceback

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("flow_runs", "task_runs"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("traceback", sa.Text))


def downgrade() -> None:
    for table in ("flow_runs", "task_runs"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("traceback")
