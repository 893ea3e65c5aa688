"""Task runs: one call of a task inside a flow run, with its record, reuse and futures.

The attempt loop, hooks and states are the engine's (`_engine`), shared with
flow runs; this module is what only task runs do: positions for resuming, kept
and cached results, upstream futures, `submit`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal, overload

from ._caching import cache_key, keep, lookup
from ._context import FlowRunContext, TaskRunContext, current_flow_run, current_task_run
from ._engine import (
    COMPLETED,
    PENDING,
    RETRYING,
    RUNNING,
    STATE_TEXT,
    Attempts,
    RunInfo,
    logger,
    run_attempts,
    run_hooks,
    stored_traceback,
)
from ._errors import FencedError, UpstreamFailedError
from ._futures import TaskFuture
from ._ids import new_id
from ._logging import flow_logger, get_run_logger
from ._metrics import RECORDER
from ._results import decode_result, encode_result, encode_result_async
from ._resume import KeptResult
from ._states import Failed, State, StateType, failure_of, interrupted
from ._threads import running_loop
from ._tracebacks import TaskFailure, mark_task_failure, task_failure
from ._tracing import TRACING

if TYPE_CHECKING:
    from ._store._writer import RunWriter
    from ._tasks import Task

_CONTAINERS = (list, tuple, set, frozenset, dict)

_submitted = False
"""Whether any task was submitted in this process: until then no argument can
hold a TaskFuture, and task runs skip looking for one in their arguments."""


def _find_futures(value: Any, found: list[TaskFuture[Any]]) -> None:
    """Collect the TaskFutures in `value`, looking inside lists, tuples, sets and dicts."""
    items = value.values() if isinstance(value, dict) else value
    for item in items:
        if isinstance(item, TaskFuture):
            found.append(item)
        elif isinstance(item, _CONTAINERS):
            _find_futures(item, found)


def _resolve(value: Any) -> Any:
    if isinstance(value, TaskFuture):
        return value.state.result()
    if isinstance(value, list):
        return [_resolve(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_resolve(item) for item in value)
    if isinstance(value, (set, frozenset)):
        return type(value)(_resolve(item) for item in value)
    if isinstance(value, dict):
        return {key: _resolve(item) for key, item in value.items()}
    return value


class _TaskRunRecord(Attempts):
    __slots__ = ("args", "encoded", "kwargs", "parameters", "row", "span", "task", "writer")

    def __init__(
        self,
        task: Task[Any, Any],
        row: dict[str, Any],
        writer: RunWriter,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.task = task
        self.row = row
        self.writer = writer
        self.args = args
        self.kwargs = kwargs
        self.parameters: dict[str, Any] | None = None
        self.encoded = False
        """The result is in the row already (`encode_result_async`, off the loop)."""
        self.span: Any = None  # OpenTelemetry's while it runs and tracing is on

    def info(self) -> RunInfo:
        if self.parameters is None:
            self.parameters = self.task.bind(self.args, self.kwargs)
        row = self.row
        return RunInfo(row["id"], row["name"], row["run_count"], self.parameters)

    def on_attempt(self, attempt: int) -> None:
        row = self.row
        if attempt == 1:
            row.update(
                run_count=1, state_type=RUNNING, state_name="Running", started_at=time.time()
            )
        else:
            row.update(run_count=attempt, state_type=RUNNING, state_name="Retrying")
        self.writer.put_task_run(row)

    def on_retry(self, state: State, attempt: int, delay: float) -> None:
        row = self.row
        name = "AwaitingRetry" if delay > 0 else "Retrying"
        row.update(state_type=RETRYING, state_name=name, error=state.message)
        self.writer.put_task_run(row)
        if self.span is not None:
            TRACING.retried(self.span, state, attempt, delay)
        RECORDER.retried("task", row["task_name"])
        get_run_logger().info(
            "task run %s failed (attempt %d), retrying in %gs: %s",
            row["name"],
            attempt,
            delay,
            state.message,
        )

    def retry_allowed(self, state: State) -> bool:
        condition = self.task.retry_policy.condition
        if condition is None:
            return True
        try:
            return bool(condition(self.task, self.info(), state))
        except Exception:
            logger.exception("retry_condition_fn of task %s failed; not retrying", self.task.name)
            return False

    def finish(self, state: State) -> None:
        row = self.row
        state.run_id = row["id"]
        ended = time.time()
        error = failure_of(state)
        if error is not None:  # the flow it fails will headline this task run's error
            mark_task_failure(error, TaskFailure(row["id"], row["name"], state.message))
        if state.type is StateType.COMPLETED and not self.encoded:
            row["result"] = encode_result(self.task, state.data)
        row.update(
            state_type=STATE_TEXT[state.type],
            state_name=state.name,
            error=None if state.type is StateType.COMPLETED else state.message,
            traceback=(
                None if error is None or state.name == "NotReady" else stored_traceback(error)
            ),
            ended_at=ended,
        )
        self.writer.put_task_run(row)
        if self.span is not None:
            TRACING.finished(self.span, row, state)
        started = row["started_at"]
        RECORDER.run_finished(
            "task",
            row["task_name"],
            row["state_type"],
            None if started is None else ended - started,
        )


@overload
async def run_task(
    task: Task[Any, Any],
    flow_run: FlowRunContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: tuple[TaskFuture[Any], ...] = (),
    task_run_id: str | None = None,
    position: int | None = None,
    *,
    unwrap: Literal[False] = False,
) -> State: ...


@overload
async def run_task(
    task: Task[Any, Any],
    flow_run: FlowRunContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: tuple[TaskFuture[Any], ...] = (),
    task_run_id: str | None = None,
    position: int | None = None,
    *,
    unwrap: bool,
) -> Any: ...


async def run_task(
    task: Task[Any, Any],
    flow_run: FlowRunContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: tuple[TaskFuture[Any], ...] = (),
    task_run_id: str | None = None,
    position: int | None = None,
    *,
    unwrap: bool = False,
) -> Any:
    """Run one task run of `task` inside `flow_run` and return its final state.

    With `unwrap`, return its result (or raise its error) instead: what an
    awaited call in a flow wants, without one more coroutine around this one.
    """
    writer = flow_run.writer
    fence = flow_run.fence
    if fence is not None and fence.lost:
        raise FencedError(
            f"flow run {flow_run.flow_run_id}: its worker lost the claim it ran under;"
            " no further task of it runs"
        )
    run_id = task_run_id or new_id()
    if position is None:
        position = _position(flow_run)
    row: dict[str, Any] = {
        "id": run_id,
        "flow_run_id": flow_run.flow_run_id,
        "task_name": task.name,
        "name": f"{task.name}-{flow_run.next_task_index(task.name)}",
        "state_type": PENDING,
        "state_name": "Pending",
        "run_count": 0,
        "error": None,
        "created_at": time.time(),
        "started_at": None,
        "ended_at": None,
        "traceback": None,
        "result": None,
        "position": position,
        "reused_from": None,
        "fence": None if fence is None else fence.token,
    }
    record = _TaskRunRecord(task, row, writer, args, kwargs)
    upstream: list[TaskFuture[Any]] = []
    if _submitted:
        if args:
            _find_futures(args, upstream)
        if kwargs:
            _find_futures(kwargs, upstream)
    if upstream or wait_for:
        state = await _wait_upstream(flow_run, run_id, row, upstream, wait_for)
        if state is not None:
            record.finish(state)
            return state.result() if unwrap else state
        record.args = args = _resolve(args)
        record.kwargs = kwargs = _resolve(kwargs)
    if task.task_run_name is not None:
        row["name"] = task.format_run_name(record.info().parameters)
    if flow_run.resume is not None and position is not None:
        kept = flow_run.resume.take(position, task.name, flow_run.flow_run_id)
        if kept is not None:
            reused = _reuse(task, row, writer, kept, "Reused")
            if reused is not None:
                flow_run.call_completed(row)
                return reused.result() if unwrap else reused
    key = None
    if task.cache_key_fn is not None:
        key = cache_key(task, flow_run, run_id, record.info().parameters)
        hit = None if key is None else await lookup(writer.database_url, key, task)
        if hit is not None:
            reused = _reuse(
                task, row, writer, KeptResult(hit.task_run_id, task.name, hit.result), "Cached"
            )
            if reused is not None:
                flow_run.call_completed(row)
                return reused.result() if unwrap else reused

    flow_token = current_flow_run.set(flow_run) if current_flow_run.get() is not flow_run else None
    outer = current_task_run.get()
    task_token = current_task_run.set(
        TaskRunContext(run_id, task.name, flow_run, task.key, position, outer)
    )
    flow_run.running.add(record)
    # the flow run's span is the parent, unless the context carried it (or a task's)
    trace_token = TRACING.task_entered(record, flow_run, flow_token is None) if TRACING.on else None
    try:
        state = await run_attempts(
            task.fn, task.is_async, args, kwargs, task.retry_policy, task.timeout_seconds, record
        )
    except BaseException as error:
        record.finish(interrupted("task", error))
        raise
    finally:
        flow_run.running.discard(record)
        if trace_token is not None:
            TRACING.leave(trace_token)
        current_task_run.reset(task_token)
        if flow_token is not None:
            current_flow_run.reset(flow_token)
    if state.type is StateType.COMPLETED:  # a large result is encoded off the loop
        record.encoded = True
        try:
            row["result"] = await encode_result_async(task, state.data)
        except BaseException:  # interrupted meanwhile: it completed, its result not kept
            record.finish(state)
            raise
    if run_id in flow_run.published_in:  # resumed, it must publish again (eventflow/_outbox.py)
        row["result"] = None
    record.finish(state)
    flow_run.call_completed(row)
    if key is not None and row["result"] is not None and state.type is StateType.COMPLETED:
        await keep(task, writer.database_url, key, row["result"], run_id, flow_run.flow_run_id)
    if state.type is StateType.FAILED:
        _log_failed_task(flow_run, row, state)
    hooks = task.on_completion if state.type is StateType.COMPLETED else task.on_failure
    if hooks and state.name != "FencedOut":
        await run_hooks(hooks, task, record.info(), state)
    return state.result() if unwrap else state


def _position(flow_run: FlowRunContext) -> int | None:
    """A task call's position in its flow run (eventflow/_resume.py): its call order
    among the flow's own calls. A call made inside another task has none: it is not
    resumed on its own (the outer task is), and it does not shift later positions
    when a resumed run reuses the outer task without calling it."""
    inside = current_task_run.get()
    if inside is not None and inside.flow_run is flow_run:
        return None
    return next(flow_run.positions)


def _reuse(
    task: Task[Any, Any], row: dict[str, Any], writer: RunWriter, kept: KeptResult, name: str
) -> State | None:
    """End this task run with the result `kept` (state `name`: Reused or Cached).

    None if the result does not read back as the task's return type: the task runs.
    """
    try:
        value = decode_result(task, kept.result)
    except Exception as error:
        logger.warning(
            "task run %s: the kept result of %s does not read back as its return type (%s);"
            " the task runs again",
            row["name"],
            kept.task_run_id,
            error,
        )
        return None
    now = time.time()
    row.update(
        state_type=COMPLETED,
        state_name=name,
        started_at=now,
        ended_at=now,
        result=kept.result,
        reused_from=kept.task_run_id,
    )
    writer.put_task_run(row)
    state = State(StateType.COMPLETED, name, None, value, now)
    state.run_id = row["id"]
    return state


async def _wait_upstream(
    flow_run: FlowRunContext,
    run_id: str,
    row: dict[str, Any],
    upstream: list[TaskFuture[Any]],
    wait_for: tuple[TaskFuture[Any], ...],
) -> State | None:
    """Record the graph edges and wait for the upstream runs.

    Returns a Failed state if one of them did not complete, else None.
    """
    writer = flow_run.writer
    writer.put_task_run(row)
    dependencies = [(f, "data") for f in upstream] + [(f, "wait_for") for f in wait_for]
    for future, kind in dependencies:
        writer.put_edge(
            {
                "flow_run_id": flow_run.flow_run_id,
                "upstream_id": future.task_run_id,
                "downstream_id": run_id,
                "kind": kind,
            }
        )
    failed = []
    root: TaskFailure | None = None
    for future, _kind in dependencies:
        upstream_state = await future.wait_async()
        if not upstream_state.is_completed():
            failed.append(future.task_name)
            root = root or task_failure(failure_of(upstream_state))
    if not failed:
        return None
    error = UpstreamFailedError(f"upstream task run(s) did not complete: {', '.join(failed)}")
    if root is not None:
        mark_task_failure(error, root)
    return Failed(error, "NotReady")


def submit_task(
    task: Task[Any, Any],
    flow_run: FlowRunContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[TaskFuture[Any]] = (),
) -> TaskFuture[Any]:
    """Start a task run concurrently with the caller and return its future."""
    global _submitted
    _submitted = True
    run_id = new_id()
    position = _position(flow_run)  # now: the order of submission, not of starting
    coroutine = run_task(task, flow_run, args, kwargs, tuple(wait_for), run_id, position)
    loop = flow_run.loop
    on_loop = running_loop() is loop
    future: asyncio.Future[State] | Any
    if on_loop:
        future = loop.create_task(coroutine)
    else:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    task_future: TaskFuture[Any] = TaskFuture(future, loop, run_id, task.name)
    flow_run.futures.append(task_future)
    return task_future


def _log_failed_task(flow_run: FlowRunContext, row: dict[str, Any], state: State) -> None:
    """A task run's failure in the worker's log and the run's stored logs."""
    flow_logger(flow_run.flow_name).warning(
        "task run %s ended %s after %d attempt(s): %s",
        row["name"],
        state.name,
        row["run_count"],
        state.message,
        extra={
            "flow_run_id": flow_run.flow_run_id,
            "flow_name": flow_run.flow_name,
            "task_run_id": row["id"],
            "task_name": row["task_name"],
            "eventflow_writer": flow_run.writer,
        },
    )
