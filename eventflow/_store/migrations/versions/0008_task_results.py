"""task results: kept with each task run, reused when a run resumes; the task cache

task_runs.result (JSON, null when not kept), task_runs.position (call order in the
flow run), task_runs.reused_from (the task run whose result a resumed run returned),
flow_runs.resumed_from (the crashed, failed or unfinished run it resumed), and the
task_cache table (results of tasks with a cache key).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("task_runs") as batch:
        batch.add_column(sa.Column("result", sa.Text))
        batch.add_column(sa.Column("position", sa.Integer))
        batch.add_column(sa.Column("reused_from", sa.String(32)))
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("resumed_from", sa.String(32)))
    op.create_table(
        "task_cache",
        sa.Column("cache_key", sa.String(500), primary_key=True),
        sa.Column("result", sa.Text, nullable=False),
        sa.Column("task_run_id", sa.String(32), nullable=False),
        sa.Column("flow_run_id", sa.String(32), nullable=False),
        sa.Column("created_at", Timestamp(), nullable=False),
        sa.Column("expires_at", Timestamp()),
    )
    op.create_index("ix_task_cache_flow_run", "task_cache", ["flow_run_id"])


def downgrade() -> None:
    op.drop_index("ix_task_cache_flow_run", "task_cache")
    op.drop_table("task_cache")
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("resumed_from")
    with op.batch_alter_table("task_runs") as batch:
        batch.drop_column("reused_from")
        batch.drop_column("position")
        batch.drop_column("result")
