"""The run context: which flow run and task run the current code belongs to.

The engine passes contexts explicitly; the ContextVars below exist only so that
plain function calls inside user code (`my_task(x)`, `get_run_logger()`) can find
the run they belong to, as in Prefect.
"""

from __future__ import annotations

import asyncio
import itertools
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._resume import KeptResult, Resume

if TYPE_CHECKING:
    from ._futures import TaskFuture
    from ._store._fences import Fence
    from ._store._writer import RunWriter


@dataclass(slots=True)
class FlowRunContext:
    """One flow run in progress."""

    flow_run_id: str
    flow_name: str
    writer: RunWriter
    loop: asyncio.AbstractEventLoop
    log_prints: bool = False
    futures: list[TaskFuture[Any]] = field(default_factory=list)
    task_counters: dict[str, itertools.count[int]] = field(default_factory=dict)
    resume: Resume | None = None
    """The kept task results this run reuses by position (see eventflow/_resume.py)."""
    positions: itertools.count[int] = field(default_factory=itertools.count)
    """Each task call's position: its call order in the run (submission order)."""
    running: set[Any] = field(default_factory=set)
    """Its task runs in progress (records): if the flow run is interrupted, they end
    with it (a sync flow's tasks run apart from it, and would stay RUNNING)."""
    completed_calls: dict[int, tuple[str, str, str | None]] = field(default_factory=dict)
    """The task calls of this attempt that completed, by position: (task name, the
    task run that computed the result, the result JSON if kept). A flow retry resumes
    them (`retry_resumes`)."""

    def call_completed(self, row: dict[str, Any]) -> None:
        """Note a task run that ended (its row) for a flow retry to resume, if it
        completed at a position."""
        position = row["position"]
        if position is not None and row["state_type"] == "COMPLETED":
            self.completed_calls[position] = (
                row["task_name"],
                row["reused_from"] or row["id"],
                row["result"],
            )

    def resume_attempt(self) -> None:
        """Before a flow retry: its task calls, from position 0 again, reuse what the
        failed attempt completed (eventflow/_resume.py), as a crashed run's do."""
        self.new_attempt()
        calls, self.completed_calls = self.completed_calls, {}
        self.resume = Resume(
            self.flow_run_id,
            {p: KeptResult(t, n, r) for p, (n, t, r) in calls.items() if r is not None},
            {p: name for p, (name, _t, _r) in calls.items()},
        )
        self.positions = itertools.count()

    fence: Fence | None = None
    """The claim the run is made under (a worker's partition or lease): its records
    carry its token, and once it is lost no task of the run starts."""
    span: Any = None
    """Its OpenTelemetry span while tracing is on (eventflow/_tracing.py)."""
    identity: str = ""
    """What its published messages' ids derive from: its event's identity (the same
    for every run of the event), else its id (eventflow/_outbox.py)."""
    outbox: list[dict[str, Any]] = field(default_factory=list)
    """Messages published in this run (`KafkaSink.publish`): written with its COMPLETED
    state, never otherwise."""
    publish_calls: dict[str, int] = field(default_factory=dict)
    """How many messages each place of the run published (a task call's position, the
    flow's body): the second part of a message's id."""
    published_in: set[str] = field(default_factory=set)
    """Task runs that published: their results are not kept, so a resumed run calls
    them again and they publish again, with the same ids."""

    def new_attempt(self) -> None:
        """Before a flow retry: what the failed attempt published is forgotten."""
        self.outbox.clear()
        self.publish_calls.clear()

    def next_task_index(self, task_name: str) -> int:
        counter = self.task_counters.get(task_name)
        if counter is None:
            counter = self.task_counters[task_name] = itertools.count()
        return next(counter)


@dataclass(slots=True)
class TaskRunContext:
    """One task run in progress, inside a flow run."""

    task_run_id: str
    task_name: str
    flow_run: FlowRunContext
    task_key: str = ""
    """The task's identity (`Task.key`: module and qualified name); "" outside a task."""
    position: int | None = None
    """The call's position in its flow run (None inside another task)."""
    outer: TaskRunContext | None = None
    """The task run it was called in, if any."""


current_flow_run: ContextVar[FlowRunContext | None] = ContextVar("eventflow_flow_run", default=None)
current_task_run: ContextVar[TaskRunContext | None] = ContextVar("eventflow_task_run", default=None)
