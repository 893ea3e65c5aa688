"""trace context: the W3C traceparent of a flow run's OpenTelemetry span

Kept while tracing is on (null otherwise): the UI links the run to its trace,
and a run that resumes or retries it links its own span to it (and continues
its trace when its event carries no context of its own).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("trace_context")
