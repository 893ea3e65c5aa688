"""The API's request and response bodies (they make the OpenAPI document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AllowInfNan, BaseModel, BeforeValidator, Field, Strict

StateTypeName = Literal[
    "PENDING", "RUNNING", "RETRYING", "COMPLETED", "FAILED", "CRASHED", "CANCELLED"
]
ReplayableState = Literal["FAILED", "CRASHED", "CANCELLED"]


class RunRef(BaseModel):
    """The newest run of a flow, or a run linked to another."""

    id: str
    state_type: str
    state_name: str
    created_at: datetime
    ended_at: datetime | None = None


class Flow(BaseModel):
    name: str
    version: str | None = None
    created_at: datetime | None = None
    runs: int = Field(description="Runs of the flow, in all states.")
    states: dict[str, int] = Field(description="Runs per state type.")
    last_run_at: datetime | None = None
    last_run: RunRef | None = None


class FlowRun(BaseModel):
    """A flow run as listed: no parameters, result or payload."""

    id: str
    flow_name: str
    name: str | None = None
    state_type: str
    state_name: str
    error: str | None = None
    run_count: int = Field(description="Attempts so far (1 + retries).")
    parent_flow_run_id: str | None = None
    retry_of: str | None = Field(None, description="The run this one replays.")
    resumed_from: str | None = Field(
        None,
        description="The crashed or failed run this one resumed: its completed task runs"
        " were reused, not run again.",
    )
    linked_run_id: str | None = Field(
        None,
        description="For a run a flow control decided on (Duplicate, Debounced, Batched,"
        " Skipped, Superseded, CancelledByEvent): the run it defers to.",
    )
    worker_id: str | None = None
    event_source: str | None = None
    event_partition: int | None = None
    event_offset: int | None = None
    event_id: str | None = None
    event_key: str | None = None
    event_time: datetime | None = None
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None


class FlowRunPage(BaseModel):
    items: list[FlowRun]
    total: int = Field(description="Runs matching the filters, in all pages.")
    states: dict[str, int] = Field(
        description="Runs per state matching the other filters (all states, for a summary)."
    )
    limit: int
    offset: int
    next_offset: int | None = Field(None, description="Offset of the next page, if any.")


class TaskRun(BaseModel):
    id: str
    flow_run_id: str
    task_name: str
    name: str
    state_type: str
    state_name: str
    run_count: int
    error: str | None = None
    traceback: str | None = Field(None, description="The failure's traceback (bounded).")
    created_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    duration_seconds: float | None = None
    position: int | None = Field(None, description="Call order in the flow run (from 0).")
    reused_from: str | None = Field(
        None, description="State `Reused`: the task run whose kept result this one returned."
    )
    reused_from_run: str | None = Field(None, description="The flow run of `reused_from`.")


class Edge(BaseModel):
    upstream_id: str
    downstream_id: str
    kind: str = Field(description="`data` (a future passed as an argument) or `wait_for`.")


class LogEntry(BaseModel):
    id: int
    task_run_id: str | None = None
    level: int
    level_name: str
    logger: str
    message: str
    timestamp: datetime


class TriggerEvent(BaseModel):
    """The event a run was started for."""

    source: str | None = None
    partition: int | None = None
    offset: int | None = None
    id: str | None = None
    key: str | None = None
    time: datetime | None = None
    payload: Any = Field(None, description="JSON when the payload is JSON, else text or base64.")
    payload_encoding: Literal["json", "text", "base64", "none"] = "none"


class FlowRunDetail(FlowRun):
    traceback: str | None = Field(None, description="The failure's traceback (bounded).")
    error_task_run_id: str | None = Field(
        None, description="The task run whose own error failed this run (its error is `error`)."
    )
    parameters: Any = None
    result: Any = None
    event: TriggerEvent | None = None
    task_runs: list[TaskRun]
    edges: list[Edge]
    logs: list[LogEntry]
    replays: list[RunRef] = Field(description="Runs asked for as retries of this one.")
    pruned: list[str] = Field(
        default_factory=list,
        description="Ids this run links to (`retry_of`, `resumed_from`, `linked_run_id`,"
        " `parent_flow_run_id`, a task run's `reused_from`) whose runs retention deleted.",
    )
    retry_refused: str | None = Field(
        None,
        description="Why the run cannot be retried (the API would answer 409 with it);"
        " null when it can be.",
    )
    trace_id: str | None = Field(
        None, description="The OpenTelemetry trace of the run's span (hex), if it was traced."
    )
    trace_url: str | None = Field(
        None, description="That trace in a tracing UI: EVENTFLOW_TRACE_URL_TEMPLATE filled in."
    )


class HistoryBucket(BaseModel):
    start: datetime
    counts: dict[str, int] = Field(description="Runs that ended in the bucket, per final state.")
    total: int
    throughput_per_second: float
    failure_rate: float | None = Field(
        None, description="FAILED and CRASHED runs over all ended runs; null when none ended."
    )


class FlowHistory(BaseModel):
    flow: str | None = None
    since: datetime
    until: datetime
    bucket_seconds: int
    buckets: list[HistoryBucket]


class Worker(BaseModel):
    id: str
    hostname: str
    pid: int
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None = None
    alive: bool = Field(description="Heartbeat within EVENTFLOW_WORKER_LEASE and not stopped.")
    runs_in_flight: int


class SourceStatus(BaseModel):
    worker_id: str
    subscription: str
    source: str
    flow_name: str
    received: int
    completed: int
    failed: int
    dead_lettered: int
    in_flight: int
    lag: int | None = None
    last_event_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    updated_at: datetime


class SubscriptionTotals(BaseModel):
    """One subscription summed over its live workers."""

    subscription: str
    source: str
    flow_name: str
    workers: int
    received: int
    completed: int
    failed: int
    dead_lettered: int
    in_flight: int
    lag: int | None = None
    last_event_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class Sources(BaseModel):
    subscriptions: list[SubscriptionTotals]
    workers: list[SourceStatus] = Field(description="The rows of each live worker.")


class RetryResponse(BaseModel):
    id: str = Field(description="The new run, PENDING until a worker running the flow claims it.")
    retry_of: str
    resumed_from: str | None = Field(
        None,
        description="The run whose completed task runs the new run reuses (null: a full re-run).",
    )


def _failed_states() -> list[ReplayableState]:
    return ["FAILED", "CRASHED"]


_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _date_time_text(value: Any) -> Any:
    if isinstance(value, str) and not _DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date-time such as 2026-11-25T10:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_date_time_text)]
"""A date-time as the document has it: pydantic alone would also read `"0"` as 1970-01-01."""

EpochSeconds = Annotated[float, Strict(), AllowInfNan(False)]
"""A number, not `true` or `"5"` (strict: the document says number)."""


def _json_integer(value: Any) -> Any:
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    return value


JsonInteger = Annotated[int, BeforeValidator(_json_integer)]
"""An integer as JSON Schema has it: `5` or `5.0`, not `true` or `"5"`."""


class ReplayRequest(BaseModel):
    flow_name: str | None = None
    state_types: list[ReplayableState] = Field(default_factory=_failed_states, min_length=1)
    since: DateTime | EpochSeconds | None = Field(None, description="ISO 8601 or epoch seconds.")
    until: DateTime | EpochSeconds | None = None
    key: str | None = None
    limit: JsonInteger = Field(1000, ge=1, le=10_000)
    full: Annotated[bool, Strict()] = Field(
        False,
        description="Run every task again; by default each replay resumes its run after"
        " the task runs that completed, as a retry does.",
    )


class ReplayResponse(BaseModel):
    ids: list[str]
    count: int


class Problem(BaseModel):
    detail: str


Window = Literal["1h", "24h", "7d"]
WINDOW_SECONDS: dict[str, int] = {"1h": 3600, "24h": 86400, "7d": 7 * 86400}


class FlowSummary(BaseModel):
    """One flow's runs created in the dashboard's window."""

    name: str
    runs: int
    finished: int = Field(description="Runs in a final state.")
    failed: int = Field(description="FAILED and CRASHED runs.")
    failure_rate: float | None = Field(None, description="`failed` / `finished`.")
    counts: dict[str, int] = Field(description="Runs per state.")
    series: list[int] = Field(description="Runs per bucket, as the dashboard's buckets.")


class SubscriptionHealth(BaseModel):
    """A subscription as the dashboard shows it, over its live workers."""

    subscription: str
    source: str
    flow_name: str
    state: str = Field(description="running, reconnecting, stalled or stopped; the worst of all.")
    state_since: datetime | None = None
    workers: int
    events_per_second: float = Field(
        description="Runs created for its events in the last minute / 60."
    )
    lag: int | None = None
    in_flight: int
    dead_lettered: int
    last_event_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None


class Dashboard(BaseModel):
    window: Window
    since: datetime
    until: datetime
    bucket_seconds: int
    buckets: list[HistoryBucket] = Field(
        description="Runs created per bucket and state, all flows (failure rate over finished)."
    )
    runs: int = Field(description="Runs created in the window.")
    finished: int = Field(description="Of those, runs in a final state.")
    counts: dict[str, int] = Field(description="Runs per state, all flows.")
    failed: int = Field(description="FAILED and CRASHED runs.")
    failure_rate: float | None = Field(None, description="`failed` / `finished`.")
    duration_p50: float | None = Field(None, description="Seconds; nearest rank.")
    duration_p95: float | None = None
    duration_runs: int = Field(description="The finished runs p50/p95 are of (the newest).")
    active: dict[str, int] = Field(description="Runs now pending, running or retrying.")
    flows: list[FlowSummary] = Field(description="Most failures first.")
    subscriptions: list[SubscriptionHealth]
    workers_alive: int
    workers_total: int


class PartitionHealth(BaseModel):
    partition: str = Field(description="topic/partition")
    worker_id: str
    lag: int | None = None
    position: int | None = None
    stored: int | None = Field(None, description="The next offset stored with the runs.")
    committed: int | None = Field(None, description="The offset committed to the broker.")


class SubscriptionWorker(BaseModel):
    worker_id: str
    alive: bool
    state: str
    state_since: datetime | None = None
    store_up: bool
    received: int
    completed: int
    failed: int
    dead_lettered: int
    in_flight: int
    lag: int | None = None
    last_event_at: datetime | None = None
    last_error: str | None = None
    last_error_at: datetime | None = None
    updated_at: datetime


class DeadLetter(BaseModel):
    """A FAILED run of one of the subscription's events, with what a dead-letter record holds."""

    run: FlowRun
    headers: dict[str, str | None]
    payload: Any = None
    payload_encoding: Literal["json", "text", "base64", "none"] = "none"


class SubscriptionDetail(BaseModel):
    subscription: str
    source: str
    flow_name: str
    state: str
    state_since: datetime | None = None
    store_up: bool
    lag: int | None = None
    events_per_second: float
    last_error: str | None = None
    last_error_at: datetime | None = None
    workers: list[SubscriptionWorker]
    partitions: list[PartitionHealth]
    since: datetime
    until: datetime
    bucket_seconds: int
    throughput: list[float] = Field(description="Events per second in each bucket from `since`.")
    dead_lettered: int = Field(description="Counted by the live workers (since they started).")
    failed_events: int = Field(description="FAILED runs of its events in the store, in all.")
    recent_dead_letters: list[DeadLetter]
