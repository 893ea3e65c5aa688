"""The engine: runs one flow run or one task run, with retries, timeouts and records.

There is one engine and it is async. Sync user functions are called on worker
threads (`run_sync`), and sync callers reach the engine through an event loop
(`_threads.portal_loop`), so the retry, timeout and state logic exists once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, overload

import orjson
from pydantic_core import to_jsonable_python

from ._caching import cache_key, keep, lookup
from ._context import FlowRunContext, TaskRunContext, current_flow_run, current_task_run
from ._errors import ParameterValidationError, RunTimeoutError, UpstreamFailedError
from ._futures import TaskFuture
from ._ids import new_id
from ._logging import flow_logger, get_run_logger
from ._metrics import RECORDER
from ._names import default_run_name
from ._results import decode_result, encode_result
from ._resume import KeptResult
from ._retries import RetryPolicy
from ._states import Cancelled, Completed, Crashed, Failed, State, StateType, cancel_request
from ._threads import Pool, run_sync, running_loop
from ._tracebacks import TaskFailure, format_traceback, mark_task_failure, task_failure

if TYPE_CHECKING:
    from ._flows import Flow
    from ._resume import Resume
    from ._store._writer import RunWriter
    from ._tasks import Task

logger = logging.getLogger("eventflow.engine")

_RESULT_LIMIT = 10_000

NOT_DECODED: Any = object()
"""`run_flow(decoded=...)`'s default: the event's JSON has not been decoded yet."""


@dataclass(frozen=True, slots=True)
class EventInfo:
    """Where a flow run's input came from, recorded with the run."""

    source: str
    id: str
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    payload: bytes | None = None
    timestamp: float | None = None
    group: str | None = None
    """The consumer group that read the event (redeliveries are recognised per group)."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What hooks and retry conditions are told about the run they are called for."""

    id: str
    name: str
    run_count: int
    parameters: dict[str, Any]


def _json(value: Any) -> str | None:
    try:
        text = orjson.dumps(value, default=to_jsonable_python).decode()
    except (TypeError, ValueError):
        text = orjson.dumps(repr(value)).decode()
    return text if len(text) <= _RESULT_LIMIT else None


class _Attempts:
    """Callbacks of one run's attempt loop: what to record at each step.

    An object rather than closures: it is built once per run on the hot path.
    A run's row goes to the writer itself, not a copy, and the writer may read
    it at any time from its thread. After the first put, every change of state
    is one `dict.update` (atomic under the GIL) followed by another put: a
    writer process gets whole states (a batch is pickled in one C call), and
    the last put always brings the final state. (The in-thread writer reads a
    row value by value and may store a mix of two states until that put.)
    """

    __slots__ = ()

    def on_attempt(self, attempt: int) -> None:
        raise NotImplementedError

    def on_retry(self, state: State, attempt: int, delay: float) -> None:
        raise NotImplementedError

    def retry_allowed(self, state: State) -> bool:
        return True


async def _attempts(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy,
    timeout: float | None,
    record: _Attempts,
    pool: Pool = "tasks",
) -> State:
    """Call `fn` until it succeeds or the retries are spent; return the final state.

    A sync `fn` runs on a thread of `pool`: top-level flows on their own, so
    the tasks they wait for never queue behind them.
    """
    attempt = 0
    while True:
        attempt += 1
        record.on_attempt(attempt)
        try:
            if timeout is None:
                if is_async:
                    value = await fn(*args, **kwargs)
                else:
                    value = await run_sync(fn, *args, pool=pool, **kwargs)
            else:
                async with asyncio.timeout(timeout) as scope:
                    if is_async:
                        value = await fn(*args, **kwargs)
                    else:
                        value = await run_sync(fn, *args, pool=pool, **kwargs)
            return Completed(value)
        except TimeoutError as error:
            if timeout is not None and scope.expired():
                state = Failed(RunTimeoutError(f"exceeded its timeout of {timeout:g}s"), "TimedOut")
            else:
                state = Failed(error)
        except Exception as error:
            state = Failed(error)
        retry_number = attempt - 1
        if retry_number >= policy.retries or not record.retry_allowed(state):
            return state
        delay = policy.delay(retry_number)
        record.on_retry(state, attempt, delay)
        if delay > 0:
            await asyncio.sleep(delay)


async def _run_hooks(hooks: Iterable[Callable[..., Any]], *args: Any) -> None:
    """Call each hook (sync ones off the loop); a failing hook is logged, never raised."""
    for hook in hooks:
        try:
            if inspect.iscoroutinefunction(hook):
                await hook(*args)
            else:
                await run_sync(hook, *args)
        except Exception:
            logger.exception("hook %s failed", getattr(hook, "__name__", hook))


# -- task runs -------------------------------------------------------------------------


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


_PENDING = StateType.PENDING.value
_RUNNING = StateType.RUNNING.value
_RETRYING = StateType.RETRYING.value
_COMPLETED = StateType.COMPLETED.value
_TEXT = {state_type: state_type.value for state_type in StateType}
"""The plain string of each state type, for rows (`.value` on an enum is slow)."""


class _TaskRunRecord(_Attempts):
    __slots__ = ("args", "kwargs", "parameters", "row", "task", "writer")

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

    def info(self) -> RunInfo:
        if self.parameters is None:
            self.parameters = self.task.bind(self.args, self.kwargs)
        row = self.row
        return RunInfo(row["id"], row["name"], row["run_count"], self.parameters)

    def on_attempt(self, attempt: int) -> None:
        row = self.row
        if attempt == 1:
            row.update(
                run_count=1, state_type=_RUNNING, state_name="Running", started_at=time.time()
            )
        else:
            row.update(run_count=attempt, state_type=_RUNNING, state_name="Retrying")
        self.writer.put_task_run(row)

    def on_retry(self, state: State, attempt: int, delay: float) -> None:
        row = self.row
        name = "AwaitingRetry" if delay > 0 else "Retrying"
        row.update(state_type=_RETRYING, state_name=name, error=state.message)
        self.writer.put_task_run(row)
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
        error = _failure(state)
        if error is not None:  # the flow it fails will headline this task run's error
            mark_task_failure(error, TaskFailure(row["id"], row["name"], state.message))
        if state.type is StateType.COMPLETED:
            row["result"] = encode_result(self.task, state.data)
        row.update(
            state_type=_TEXT[state.type],
            state_name=state.name,
            error=None if state.type is StateType.COMPLETED else state.message,
            traceback=None if error is None or state.name == "NotReady" else _traceback(error),
            ended_at=ended,
        )
        self.writer.put_task_run(row)
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
    run_id = task_run_id or new_id()
    if position is None:
        position = _position(flow_run)
    row: dict[str, Any] = {
        "id": run_id,
        "flow_run_id": flow_run.flow_run_id,
        "task_name": task.name,
        "name": f"{task.name}-{flow_run.next_task_index(task.name)}",
        "state_type": _PENDING,
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
                return reused.result() if unwrap else reused
    key = None
    if task.cache_key_fn is not None:
        key = cache_key(task, flow_run, run_id, record.info().parameters)
        hit = None if key is None else await lookup(writer.database_url, key, task.name)
        if hit is not None:
            reused = _reuse(task, row, writer, KeptResult(hit[0], task.name, hit[1]), "Cached")
            if reused is not None:
                return reused.result() if unwrap else reused

    flow_token = current_flow_run.set(flow_run) if current_flow_run.get() is not flow_run else None
    task_token = current_task_run.set(TaskRunContext(run_id, task.name, flow_run))
    flow_run.running.add(record)
    try:
        state = await _attempts(
            task.fn, task.is_async, args, kwargs, task.retry_policy, task.timeout_seconds, record
        )
    except BaseException as error:
        record.finish(_interrupted("task", error))
        raise
    finally:
        flow_run.running.discard(record)
        current_task_run.reset(task_token)
        if flow_token is not None:
            current_flow_run.reset(flow_token)
    record.finish(state)
    if key is not None and row["result"] is not None and state.type is StateType.COMPLETED:
        await keep(task, writer.database_url, key, row["result"], run_id, flow_run.flow_run_id)
    if state.type is StateType.FAILED:
        _log_failed_task(flow_run, row, state)
    hooks = task.on_completion if state.type is StateType.COMPLETED else task.on_failure
    if hooks:
        await _run_hooks(hooks, task, record.info(), state)
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
        state_type=_COMPLETED,
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
            root = root or task_failure(_failure(upstream_state))
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


# -- flow runs -------------------------------------------------------------------------


def _log_failed_run(row: dict[str, Any], writer: RunWriter, state: State) -> None:
    """One line per flow run that ends FAILED (WARNING) or CRASHED (ERROR), with its event."""
    if row["event_offset"] is not None:
        event = f" on {row['event_source']} partition {row['event_partition']} offset "
        event += str(row["event_offset"])
    elif row["event_id"] is not None:
        event = f" on {row['event_source']} event {row['event_id']}"
    else:
        event = ""
    flow_logger(row["flow_name"]).log(
        logging.ERROR if state.type is StateType.CRASHED else logging.WARNING,
        "flow run %s %s%s: %s",
        row["id"],
        state.type.value,
        event,
        state.message,
        extra={
            "flow_run_id": row["id"],
            "flow_name": row["flow_name"],
            "eventflow_writer": writer,
        },
    )


class _FlowRunRecord(_Attempts):
    __slots__ = ("parameters", "row", "writer")

    def __init__(self, row: dict[str, Any], writer: RunWriter, parameters: dict[str, Any]) -> None:
        self.row = row
        self.writer = writer
        self.parameters = parameters

    def info(self) -> RunInfo:
        row = self.row
        return RunInfo(row["id"], row["name"] or row["id"], row["run_count"], self.parameters)

    def on_attempt(self, attempt: int) -> None:
        row = self.row
        if attempt == 1:
            row["run_count"] = 1
        else:
            row.update(run_count=attempt, state_type=_RUNNING, state_name="Retrying")
            self.writer.put_flow_run(row)

    def on_retry(self, state: State, attempt: int, delay: float) -> None:
        row = self.row
        name = "AwaitingRetry" if delay > 0 else "Retrying"
        row.update(state_type=_RETRYING, state_name=name, error=state.message)
        self.writer.put_flow_run(row)
        RECORDER.retried("flow", row["flow_name"])
        get_run_logger().info(
            "flow run failed (attempt %d), retrying in %gs: %s", attempt, delay, state.message
        )

    def finish(self, state: State) -> None:
        row = self.row
        state.run_id = row["id"]
        ended = time.time()
        if state.type is StateType.COMPLETED:
            result = None if state.data is None else _json(state.data)
            row.update(
                state_type=_COMPLETED,
                state_name=state.name,
                ended_at=ended,
                error=None,
                result=result,
            )
        else:
            error = _failure(state)
            cause = task_failure(error)  # a task run's own error, not "upstream did not complete"
            row.update(
                state_type=_TEXT[state.type],
                state_name=state.name,
                ended_at=ended,
                error=cause.message if cause is not None and cause.message else state.message,
                traceback=None if error is None else _traceback(error),
            )
            if state.type is StateType.FAILED or state.type is StateType.CRASHED:
                _log_failed_run(row, self.writer, state)
        self.writer.put_flow_run(row)
        started = row["started_at"]
        RECORDER.run_finished(
            "flow",
            row["flow_name"],
            row["state_type"],
            None if started is None else ended - started,
        )


async def run_flow(
    flow: Flow[Any, Any],
    writer: RunWriter,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    raw_parameters: bytes | None = None,
    decoded: Any = NOT_DECODED,
    event: EventInfo | None = None,
    parent: FlowRunContext | None = None,
    worker_id: str | None = None,
    retry_of: str | None = None,
    flow_run_id: str | None = None,
    resume: Resume | None = None,
) -> State:
    """Run `flow` once, recorded through `writer`, and return its final state.

    Parameters come from `args`/`kwargs` (a direct call) or from `raw_parameters`,
    a JSON document (an event; `decoded`: that document if a flow control has
    decoded it already, so it is not parsed twice). Invalid parameters end the run FAILED without
    calling the flow; nothing is raised. With `resume`, task calls reuse the
    results that run kept (eventflow/_resume.py).
    """
    run_id = flow_run_id or new_id()
    writer.ensure_flow(flow.name, flow.version)
    now = time.time()
    row: dict[str, Any] = {
        "id": run_id,
        "flow_name": flow.name,
        "name": default_run_name(run_id),
        "state_type": _RUNNING,
        "state_name": "Running",
        "parameters": None,
        "result": None,
        "error": None,
        "run_count": 0,
        "parent_flow_run_id": parent.flow_run_id if parent else None,
        "retry_of": retry_of,
        "worker_id": worker_id,
        "event_source": None if event is None else event.source,
        "event_partition": None if event is None else event.partition,
        "event_offset": None if event is None else event.offset,
        "event_id": None if event is None else event.id,
        "event_key": None if event is None else event.key,
        "event_group": None if event is None else event.group,
        "event_payload": None if event is None else event.payload,
        "event_time": None if event is None else event.timestamp,
        "created_at": now,
        "started_at": now,
        "ended_at": None,
        "traceback": None,
        "resumed_from": None if resume is None else resume.run_id,
    }
    try:
        if decoded is not NOT_DECODED:
            parameters = flow.validate_decoded(decoded)
        elif raw_parameters is not None:
            parameters = flow.validate_json(raw_parameters)
        else:
            parameters = flow.validate(args, kwargs or {})
    except ParameterValidationError as error:
        row["started_at"] = None
        if raw_parameters is not None and event is None:
            row["parameters"] = raw_parameters.decode("utf-8", "replace")
        record = _FlowRunRecord(row, writer, {})
        state = Failed(error)
        record.finish(state)
        if flow.on_failure:
            await _run_hooks(flow.on_failure, flow, record.info(), state)
        return state

    if event is None or event.payload is not raw_parameters:
        row["parameters"] = _json(parameters)  # else the payload column holds them already
    if flow.flow_run_name is not None:
        row["name"] = flow.format_run_name(parameters)
    writer.put_flow_run(row)
    record = _FlowRunRecord(row, writer, parameters)
    context = FlowRunContext(run_id, flow.name, writer, asyncio.get_running_loop(), flow.log_prints)
    context.resume = resume
    token = current_flow_run.set(context)
    try:
        state = await _attempts(
            flow.fn,
            flow.is_async,
            (),
            parameters,
            flow.retry_policy,
            flow.timeout_seconds,
            record,
            pool="tasks" if parent is not None else "flows",  # a subflow is waited on
        )
        if context.futures:
            await _finish_forgotten(context)
    except BaseException as error:
        ended = _interrupted("flow", error)
        for task_record in list(context.running):  # not reached by the interruption
            task_record.finish(_interrupted("task", error))
        record.finish(ended)
        if ended.type is StateType.CRASHED and flow.on_crashed:
            await asyncio.shield(_run_hooks(flow.on_crashed, flow, record.info(), ended))
        raise
    finally:
        current_flow_run.reset(token)
    record.finish(state)
    hooks = flow.on_completion if state.type is StateType.COMPLETED else flow.on_failure
    if hooks:
        await _run_hooks(hooks, flow, record.info(), state)
    return state


def _interrupted(kind: str, error: BaseException) -> State:
    """The state of a run an exception went through: CANCELLED if a flow control
    cancelled it on purpose (`CancelRequest`), else CRASHED."""
    request = cancel_request(error)
    if request is not None:
        return Cancelled(request.message, request.name)
    why = type(error).__name__
    if isinstance(error, asyncio.CancelledError) and error.args and isinstance(error.args[0], str):
        why = error.args[0]  # what cancelled it said why ("SIGTERM")
    return Crashed(f"the {kind} run was interrupted: {why}", error)


def _failure(state: State) -> BaseException | None:
    """The exception of a FAILED state (not of a crash: that one's cause is outside the run)."""
    if state.type is StateType.FAILED and isinstance(state.data, BaseException):
        return state.data
    return None


def _traceback(error: BaseException) -> str | None:
    """A bounded traceback, or None where it only shows eventflow's own frames."""
    if isinstance(error, ParameterValidationError):
        return None
    return format_traceback(error)


async def _finish_forgotten(context: FlowRunContext) -> None:
    """Wait for task runs the flow submitted and never waited on."""
    pending = [f for f in context.futures if not f.done()]
    while pending:
        await asyncio.wait([asyncio.ensure_future(f.wait_async()) for f in pending])
        pending = [f for f in context.futures if not f.done()]
