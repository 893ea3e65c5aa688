"""Tables of the run store (SQLAlchemy Core; the Alembic migrations mirror them)."""

from __future__ import annotations

import sqlalchemy as sa

from .._states import FINAL_STATE_TYPES
from ._types import Timestamp

metadata = sa.MetaData()

TIMESTAMP = Timestamp()

ACTIVE = "state_type IN ('PENDING', 'RUNNING', 'RETRYING')"
"""The predicate of the index of runs in flight: queries using it repeat it word for word."""
NOT_COMPLETED = "state_type <> 'COMPLETED'"

POSTGRESQL_INDEXES = {
    # runs that ended in a time range (the UI's histogram): rows are written
    # about when they end, so a BRIN index of block ranges finds them for
    # almost no cost per insert
    "ix_flow_runs_ended_brin": "CREATE INDEX {if_not_exists} ix_flow_runs_ended_brin"
    " ON flow_runs USING brin (ended_at)",
    # a run by a suffix of its id (logs and the CLI print the end of ids)
    "ix_flow_runs_id_reversed": "CREATE INDEX {if_not_exists} ix_flow_runs_id_reversed"
    " ON flow_runs ((reverse(id)) text_pattern_ops)",
}
"""Indexes only PostgreSQL has (SQLite has no BRIN and no `reverse`), created by
migration 0006; Alembic's comparison with this module leaves them out."""

flows = sa.Table(
    "flows",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("version", sa.String(100)),
    sa.Column("created_at", TIMESTAMP, nullable=False),
)

flow_runs = sa.Table(
    "flow_runs",
    metadata,
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
    sa.Column("event_group", sa.String(255)),
    sa.Column("event_payload", sa.LargeBinary),
    sa.Column("event_time", TIMESTAMP),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.Column("started_at", TIMESTAMP),
    sa.Column("ended_at", TIMESTAMP),
    sa.Column("linked_run_id", sa.String(32)),
    sa.Column("traceback", sa.Text),  # bounded: eventflow/_tracebacks.py
    sa.Column("resumed_from", sa.String(32)),  # the unfinished run whose task results it reused
    sa.Column("trace_context", sa.String(64)),  # its span's W3C traceparent (eventflow/_tracing.py)
    # Only what a query needs: every index costs each run's insert (migration 0006).
    # (state_type last: counts by flow and state read these indexes alone)
    sa.Index("ix_flow_runs_flow_created", "flow_name", "created_at", "state_type"),
    sa.Index("ix_flow_runs_created_state", "created_at", "state_type"),
    sa.Index("ix_flow_runs_event_position", "event_source", "event_partition", "event_offset"),
    sa.Index("ix_flow_runs_event_key", "event_key", "created_at"),
    *(
        sa.Index(name, *columns, postgresql_where=sa.text(where), sqlite_where=sa.text(where))
        for name, columns, where in (
            # listing by a state other than COMPLETED (most runs) without walking them all
            ("ix_flow_runs_state_created", ("state_type", "created_at"), NOT_COMPLETED),
            # the crash sweep and the workers page: the runs in flight of a worker
            ("ix_flow_runs_worker_active", ("worker_id",), ACTIVE),
            # unpartitioned sources (HTTP) deduplicate by event id; Kafka by position
            ("ix_flow_runs_event_id", ("event_id",), "event_partition IS NULL"),
            ("ix_flow_runs_retry_of", ("retry_of", "created_at"), "retry_of IS NOT NULL"),
            # a crashed direct call is resumed once: is there a run resuming it yet?
            ("ix_flow_runs_resumed_from", ("resumed_from",), "resumed_from IS NOT NULL"),
        )
    ),
)

task_runs = sa.Table(
    "task_runs",
    metadata,
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
    sa.Column("traceback", sa.Text),
    sa.Column("result", sa.Text),  # JSON; null when not kept (too large, not JSON, opted out)
    sa.Column("position", sa.Integer),  # call order in the flow run (submission order)
    sa.Column("reused_from", sa.String(32)),  # the task run whose result this one returned
    sa.Index("ix_task_runs_flow_run", "flow_run_id"),
)

task_cache = sa.Table(
    "task_cache",
    metadata,
    sa.Column("cache_key", sa.String(500), primary_key=True),
    sa.Column("result", sa.Text, nullable=False),
    sa.Column("task_run_id", sa.String(32), nullable=False),
    sa.Column("flow_run_id", sa.String(32), nullable=False),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.Column("expires_at", TIMESTAMP),
    sa.Index("ix_task_cache_flow_run", "flow_run_id"),
)
"""Results of tasks with a `cache_key_fn`, by key: a call with a key found here and not
expired returns the result without running (see eventflow/_caching.py)."""

task_run_edges = sa.Table(
    "task_run_edges",
    metadata,
    sa.Column("flow_run_id", sa.String(32), nullable=False),
    sa.Column("upstream_id", sa.String(32), primary_key=True),
    sa.Column("downstream_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Index("ix_task_run_edges_flow_run", "flow_run_id"),
)

logs = sa.Table(
    "logs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("flow_run_id", sa.String(32), nullable=False),
    sa.Column("task_run_id", sa.String(32)),
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("logger", sa.String(200), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("timestamp", TIMESTAMP, nullable=False),
    sa.Index("ix_logs_flow_run", "flow_run_id", "timestamp"),
)

workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("hostname", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started_at", TIMESTAMP, nullable=False),
    sa.Column("heartbeat_at", TIMESTAMP, nullable=False),
    sa.Column("stopped_at", TIMESTAMP),
)

consumer_offsets = sa.Table(
    "consumer_offsets",
    metadata,
    sa.Column("group_id", sa.String(300), primary_key=True),
    sa.Column("topic", sa.String(300), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
)

source_status = sa.Table(
    "source_status",
    metadata,
    sa.Column("worker_id", sa.String(64), primary_key=True),
    sa.Column("subscription", sa.String(500), primary_key=True),
    sa.Column("source", sa.String(300), nullable=False),
    sa.Column("flow_name", sa.String(200), nullable=False),
    sa.Column("received", sa.BigInteger, nullable=False),
    sa.Column("completed", sa.BigInteger, nullable=False),
    sa.Column("failed", sa.BigInteger, nullable=False),
    sa.Column("dead_lettered", sa.BigInteger, nullable=False),
    sa.Column("in_flight", sa.Integer, nullable=False),
    sa.Column("lag", sa.BigInteger),
    sa.Column("last_event_at", TIMESTAMP),
    sa.Column("last_error", sa.Text),
    sa.Column("last_error_at", TIMESTAMP),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="running"),
    sa.Column("state_since", TIMESTAMP),
    sa.Column("store_up", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("partitions", sa.Text),
)
"""Each subscription's live counters and liveness: `state` is running, reconnecting,
stalled or stopped (since `state_since`); `store_up` whether its worker can write;
`partitions` a JSON object `{"topic/partition": {"lag", "position", "stored",
"committed"}}` (null for an unpartitioned source)."""

leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(300), primary_key=True),
    sa.Column("holder", sa.String(64), nullable=False),
    sa.Column("expires_at", TIMESTAMP, nullable=False),
)

fences = sa.Table(
    "fences",
    metadata,
    sa.Column("scope", sa.String(600), primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("holder", sa.String(64)),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
)
"""Fencing tokens: each scope's current epoch and who claimed it (see _fences.py)."""

FINAL_STATES = tuple(state.value for state in FINAL_STATE_TYPES)
"""States a run never leaves: no write changes a row in one of them."""
NOT_FINAL = "state_type NOT IN (" + ", ".join(f"'{s}'" for s in FINAL_STATES) + ")"

source_checkpoints = sa.Table(
    "source_checkpoints",
    metadata,
    sa.Column("subscription", sa.String(500), primary_key=True),
    sa.Column("source", sa.String(300), nullable=False),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
)
"""Where an unpartitioned source resumes after a restart (an HTTP poll's cursor), saved
once every event before it is acknowledged."""

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("flow_name", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(500), primary_key=True),
    sa.Column("run_id", sa.String(32), nullable=False),
    sa.Column("worker_id", sa.String(64), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("claimed_at", TIMESTAMP, nullable=False),
    sa.Column("completed_at", TIMESTAMP),
)
"""One claim per (flow, idempotency key): RUNNING, COMPLETED or RELEASED (see _idempotency.py)."""

outbox = sa.Table(
    "outbox",
    metadata,
    sa.Column(
        "seq",
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    sa.Column("message_id", sa.String(64), nullable=False, unique=True),
    sa.Column("destination", sa.String(300), nullable=False),
    sa.Column("flow_run_id", sa.String(32), nullable=False),
    sa.Column("key", sa.LargeBinary),
    sa.Column("value", sa.LargeBinary, nullable=False),
    sa.Column("headers", sa.Text),
    sa.Column("created_at", TIMESTAMP, nullable=False),
    sa.Column("attempt", sa.BigInteger),
    sa.Column("published_at", TIMESTAMP),
    sa.Index(
        "ix_outbox_pending",
        "destination",
        "seq",
        postgresql_where=sa.text("published_at IS NULL"),
        sqlite_where=sa.text("published_at IS NULL"),
    ),
    sa.Index("ix_outbox_published", "published_at"),
)
"""Messages flows published (`KafkaSink.publish`), written in the transaction that made
their run COMPLETED, in `seq` order; a relay sends them and sets `published_at`
(`attempt`: the relay's transaction that carries them; see eventflow/_outbox.py)."""

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("name", sa.String(500), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("last_at", TIMESTAMP),
    sa.Column("due_at", TIMESTAMP),
    sa.Column("declared_at", TIMESTAMP, nullable=False),
    sa.Column("late_since", TIMESTAMP),
    sa.Column("updated_at", TIMESTAMP, nullable=False),
)
"""Datasets (see eventflow/_datasets.py): the last event or write (`last_at`), a
schedule's completion deadline (`due_at`, set by the worker that has the schedule; the
other expectations are on the edges), and `late_since`, set while a late notice is out:
the one guarded UPDATE that sets or clears it sends the notice (see _lineage.py)."""

lineage_edges = sa.Table(
    "lineage_edges",
    metadata,
    sa.Column("flow_name", sa.String(200), primary_key=True),
    sa.Column("dataset", sa.String(500), primary_key=True),
    sa.Column("direction", sa.String(8), primary_key=True),
    sa.Column("declared_at", TIMESTAMP, nullable=False),
    sa.Column("expect_seconds", sa.Float),
)
"""Which flows read (`reads`) and write (`writes`) which datasets, as workers declared them,
with the expectation each declared (`expect_every`, `fresh_within`, a schedule's
deadline): a dataset's is the shortest of its edges'. A worker replaces its flows' edges
when it starts, so an expectation taken out of the code goes with them."""
