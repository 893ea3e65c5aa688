"""The runs `TestApp` returns: what the store holds, as plain records."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from .._states import StateType
from .._tracing import trace_id_of


@dataclass(frozen=True, slots=True)
class TaskRun:
    """A task run of a flow run, as stored. `name` is the task's name."""

    id: str
    name: str
    run_name: str
    state: StateType
    state_name: str
    error: str | None
    run_count: int


@dataclass(frozen=True, slots=True)
class RunLog:
    """A log line recorded with a run (`get_run_logger()`, or eventflow's own)."""

    level: int
    logger: str
    message: str
    task_run_id: str | None
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class FlowRun:
    """A flow run as the store has it.

    `state` compares equal to its name (`run.state == "COMPLETED"`); `result`
    is the stored JSON value of what the flow returned (a pydantic model comes
    back as a dict); `error` why it failed; `linked_run_id` the run a
    "Duplicate", "Debounced", "Skipped" or "Batched" record points to.
    """

    id: str
    flow_name: str
    name: str | None
    state: StateType
    state_name: str
    result: Any
    error: str | None
    run_count: int
    event_id: str | None
    event_key: str | None
    linked_run_id: str | None
    retry_of: str | None
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    task_runs: tuple[TaskRun, ...]
    logs: tuple[RunLog, ...]
    trace_id: str | None = None
    """The OpenTelemetry trace the run's span belongs to (hex), while tracing is on."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> FlowRun:
        """From `RunReader.get_flow_run`'s row (with its task runs and logs)."""
        return cls(
            id=row["id"],
            flow_name=row["flow_name"],
            name=row["name"],
            state=StateType(row["state_type"]),
            state_name=row["state_name"],
            result=None if row["result"] is None else orjson.loads(row["result"]),
            error=row["error"],
            run_count=row["run_count"],
            event_id=row["event_id"],
            event_key=row["event_key"],
            linked_run_id=row["linked_run_id"],
            retry_of=row["retry_of"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            ended_at=row["ended_at"],
            task_runs=tuple(
                TaskRun(
                    id=t["id"],
                    name=t["task_name"],
                    run_name=t["name"],
                    state=StateType(t["state_type"]),
                    state_name=t["state_name"],
                    error=t["error"],
                    run_count=t["run_count"],
                )
                for t in row.get("task_runs", ())
            ),
            logs=tuple(
                RunLog(
                    level=log["level"],
                    logger=log["logger"],
                    message=log["message"],
                    task_run_id=log["task_run_id"],
                    timestamp=log["timestamp"],
                )
                for log in row.get("logs", ())
            ),
            trace_id=trace_id_of(row.get("trace_context")),
        )
