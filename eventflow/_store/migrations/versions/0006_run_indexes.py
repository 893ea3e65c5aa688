"""run indexes: only those a query uses; partial ones for the few runs not COMPLETED

Every index costs each run's insert, and on PostgreSQL that was most of the
server's CPU per event. Dropped: flow_runs(created_at) (now (created_at,
state_type), which also counts runs by state; flow_runs(flow_name, created_at)
gets state_type too, for counts by flow and state), flow_runs(worker_id, state_type)
and task_runs(task_name, state_type). Partial: state listings of states other
than COMPLETED, a worker's runs in flight, event ids of unpartitioned sources,
replays. PostgreSQL also gets a BRIN index on ended_at and one on reverse(id)
(see `_schema.POSTGRESQL_INDEXES`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._schema import ACTIVE, NOT_COMPLETED, POSTGRESQL_INDEXES

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def _partial(name: str, columns: list[str], where: str) -> None:
    op.create_index(
        name,
        "flow_runs",
        columns,
        postgresql_where=sa.text(where),
        sqlite_where=sa.text(where),
    )


def upgrade() -> None:
    op.drop_index("ix_flow_runs_created", "flow_runs")
    op.drop_index("ix_flow_runs_state_created", "flow_runs")
    op.drop_index("ix_flow_runs_event_id", "flow_runs")
    op.drop_index("ix_flow_runs_worker_state", "flow_runs")
    op.drop_index("ix_task_runs_name_state", "task_runs")
    op.drop_index("ix_flow_runs_flow_created", "flow_runs")
    op.create_index(
        "ix_flow_runs_flow_created", "flow_runs", ["flow_name", "created_at", "state_type"]
    )
    op.create_index("ix_flow_runs_created_state", "flow_runs", ["created_at", "state_type"])
    op.create_index("ix_flow_runs_event_key", "flow_runs", ["event_key", "created_at"])
    _partial("ix_flow_runs_state_created", ["state_type", "created_at"], NOT_COMPLETED)
    _partial("ix_flow_runs_worker_active", ["worker_id"], ACTIVE)
    _partial("ix_flow_runs_event_id", ["event_id"], "event_partition IS NULL")
    _partial("ix_flow_runs_retry_of", ["retry_of", "created_at"], "retry_of IS NOT NULL")
    if op.get_bind().dialect.name == "postgresql":
        for ddl in POSTGRESQL_INDEXES.values():
            op.execute(ddl.format(if_not_exists="IF NOT EXISTS"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in POSTGRESQL_INDEXES:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    for name in (
        "ix_flow_runs_retry_of",
        "ix_flow_runs_event_id",
        "ix_flow_runs_worker_active",
        "ix_flow_runs_state_created",
        "ix_flow_runs_event_key",
        "ix_flow_runs_created_state",
    ):
        op.drop_index(name, "flow_runs")
    op.drop_index("ix_flow_runs_flow_created", "flow_runs")
    op.create_index("ix_flow_runs_flow_created", "flow_runs", ["flow_name", "created_at"])
    op.create_index("ix_task_runs_name_state", "task_runs", ["task_name", "state_type"])
    op.create_index("ix_flow_runs_worker_state", "flow_runs", ["worker_id", "state_type"])
    op.create_index("ix_flow_runs_event_id", "flow_runs", ["event_id"])
    op.create_index("ix_flow_runs_state_created", "flow_runs", ["state_type", "created_at"])
    op.create_index("ix_flow_runs_created", "flow_runs", ["created_at"])
