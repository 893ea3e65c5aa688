"""initial schema: flows, flow runs, task runs, edges, logs, workers, consumer offsets

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from eventflow._store._types import Timestamp

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TIMESTAMP = Timestamp()


def upgrade() -> None:
    op.create_table(
        "flows",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(100)),
        sa.Column("created_at", TIMESTAMP, nullable=False),
    )
    op.create_table(
        "flow_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("flow_name", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300)),
        sa.Column("state_type", sa.String(16), nullable=False),
        sa.Column("state_name", sa.String(32), nullable=False),
        sa.Column("parameters", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("run_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("parent_flow_run_id", sa.String(32)),
        sa.Column("retry_of", sa.String(32)),
        sa.Column("worker_id", sa.String(64)),
        sa.Column("event_source", sa.String(300)),
        sa.Column("event_partition", sa.Integer),
        sa.Column("event_offset", sa.BigInteger),
        sa.Column("event_id", sa.String(500)),
        sa.Column("event_key", sa.String(500)),
        sa.Column("event_payload", sa.LargeBinary),
        sa.Column("event_time", TIMESTAMP),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("ended_at", TIMESTAMP),
    )
    op.create_index("ix_flow_runs_flow_created", "flow_runs", ["flow_name", "created_at"])
    op.create_index("ix_flow_runs_state_created", "flow_runs", ["state_type", "created_at"])
    op.create_index("ix_flow_runs_created", "flow_runs", ["created_at"])
    op.create_index(
        "ix_flow_runs_event_position",
        "flow_runs",
        ["event_source", "event_partition", "event_offset"],
    )
    op.create_index("ix_flow_runs_event_id", "flow_runs", ["event_id"])
    op.create_index("ix_flow_runs_worker_state", "flow_runs", ["worker_id", "state_type"])
    op.create_table(
        "task_runs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("flow_run_id", sa.String(32), nullable=False),
        sa.Column("task_name", sa.String(200), nullable=False),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("state_type", sa.String(16), nullable=False),
        sa.Column("state_name", sa.String(32), nullable=False),
        sa.Column("run_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP),
        sa.Column("ended_at", TIMESTAMP),
    )
    op.create_index("ix_task_runs_flow_run", "task_runs", ["flow_run_id"])
    op.create_index("ix_task_runs_name_state", "task_runs", ["task_name", "state_type"])
    op.create_table(
        "task_run_edges",
        sa.Column("flow_run_id", sa.String(32), nullable=False),
        sa.Column("upstream_id", sa.String(32), primary_key=True),
        sa.Column("downstream_id", sa.String(32), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
    )
    op.create_index("ix_task_run_edges_flow_run", "task_run_edges", ["flow_run_id"])
    op.create_table(
        "logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flow_run_id", sa.String(32), nullable=False),
        sa.Column("task_run_id", sa.String(32)),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("logger", sa.String(200), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("timestamp", TIMESTAMP, nullable=False),
    )
    op.create_index("ix_logs_flow_run", "logs", ["flow_run_id", "timestamp"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("hostname", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=False),
        sa.Column("heartbeat_at", TIMESTAMP, nullable=False),
        sa.Column("stopped_at", TIMESTAMP),
    )
    op.create_table(
        "consumer_offsets",
        sa.Column("group_id", sa.String(300), primary_key=True),
        sa.Column("topic", sa.String(300), primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "consumer_offsets",
        "workers",
        "logs",
        "task_run_edges",
        "task_runs",
        "flow_runs",
        "flows",
    ):
        op.drop_table(table)
