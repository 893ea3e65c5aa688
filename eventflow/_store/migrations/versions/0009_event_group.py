"""event group: the consumer group a run's event was read by

Redelivered events are recognised by their position (flow, topic, partition,
offset); with the group in the run, a second consumer group reading the same
topic into the same flow and store (a reprocessing under a new group id) runs
every event again instead of skipping those the first group finished. Runs
stored before this revision have no group and still count for every group.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.add_column(sa.Column("event_group", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("flow_runs") as batch:
        batch.drop_column("event_group")
