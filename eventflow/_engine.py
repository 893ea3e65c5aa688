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
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic_core import to_jsonable_python

from ._context import FlowRunContext, TaskRunContext, current_flow_run, current_task_run
from ._errors import ParameterValidationError, RunTimeoutError, UpstreamFailedError
from ._futures import TaskFuture
from ._retries import RetryPolicy
from ._states import Completed, Crashed, Failed, State, StateType
from ._threads import run_sync

if TYPE_CHECKING:
    from ._flows import Flow
    from ._store._writer import RunWriter
    from ._tasks import Task

logger = logging.getLogger("eventflow.engine")

_RESULT_LIMIT = 10_000


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class EventInfo:
    """Where a flow run's input came from, recorded with the run."""

    source: str
    id: str
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    payload: bytes | None = None


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


async def _call(fn: Callable[..., Any], is_async: bool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    if is_async:
        return await fn(*args, **kwargs)
    return await run_sync(fn, *args, **kwargs)


async def _attempts(
    invoke: Callable[[], Awaitable[Any]],
    policy: RetryPolicy,
    timeout: float | None,
    on_attempt: Callable[[int], None],
    on_retry: Callable[[State, int, float], None],
    retry_allowed: Callable[[State], bool],
) -> State:
    """Call `invoke` until it succeeds or the retries are spent; return the final state."""
    attempt = 0
    while True:
        attempt += 1
        on_attempt(attempt)
        try:
            if timeout is None:
                value = await invoke()
            else:
                async with asyncio.timeout(timeout) as scope:
                    value = await invoke()
            return Completed(value)
        except TimeoutError as error:
            if timeout is not None and scope.expired():
                state = Failed(RunTimeoutError(f"exceeded its timeout of {timeout:g}s"), "TimedOut")
            else:
                state = Failed(error)
        except Exception as error:
            state = Failed(error)
        retry_number = attempt - 1
        if retry_number >= policy.retries or not retry_allowed(state):
            return state
        delay = policy.delay(retry_number)
        on_retry(state, attempt, delay)
        if delay > 0:
            await asyncio.sleep(delay)


def _run_hooks(hooks: Iterable[Callable[..., Any]], *args: Any) -> Awaitable[None]:
    return _run_hooks_async(tuple(hooks), args)


async def _run_hooks_async(hooks: tuple[Callable[..., Any], ...], args: tuple[Any, ...]) -> None:
    for hook in hooks:
        try:
            if inspect.iscoroutinefunction(hook):
                await hook(*args)
            else:
                await run_sync(hook, *args)
        except Exception:
            logger.exception("hook %s failed", getattr(hook, "__name__", hook))


# -- task runs -------------------------------------------------------------------------


def _visit_futures(value: Any, found: list[TaskFuture[Any]]) -> None:
    if isinstance(value, TaskFuture):
        found.append(value)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _visit_futures(item, found)
    elif isinstance(value, dict):
        for item in value.values():
            _visit_futures(item, found)


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


async def run_task(
    task: Task[Any, Any],
    flow_run: FlowRunContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[TaskFuture[Any]] = (),
    task_run_id: str | None = None,
) -> State:
    """Run one task run of `task` inside `flow_run` and return its final state."""
    writer = flow_run.writer
    run_id = task_run_id or new_id()
    index = flow_run.next_task_index(task.name)
    row: dict[str, Any] = {
        "id": run_id,
        "flow_run_id": flow_run.flow_run_id,
        "task_name": task.name,
        "name": f"{task.name}-{index}",
        "state_type": StateType.PENDING.value,
        "state_name": "Pending",
        "run_count": 0,
        "error": None,
        "created_at": time.time(),
        "started_at": None,
        "ended_at": None,
    }
    upstream: list[TaskFuture[Any]] = []
    _visit_futures(args, upstream)
    _visit_futures(kwargs, upstream)
    waits = list(wait_for)
    if upstream or waits:
        writer.put_task_run(dict(row))
        for future, kind in [(f, "data") for f in upstream] + [(f, "wait_for") for f in waits]:
            writer.put_edge({
                "flow_run_id": flow_run.flow_run_id,
                "upstream_id": future.task_run_id,
                "downstream_id": run_id,
                "kind": kind,
            })
        states = [await future.wait_async() for future in upstream + waits]
        not_completed = [f for f, s in zip(upstream + waits, states, strict=True) if not s.is_completed()]
        if not_completed:
            names = ", ".join(f.task_name for f in not_completed)
            state = Failed(UpstreamFailedError(f"upstream task run(s) did not complete: {names}"), "NotReady")
            _finish_task_row(row, state)
            writer.put_task_run(row)
            return state
        args = _resolve(args)
        kwargs = _resolve(kwargs)

    parameters: dict[str, Any] | None = None
    if task.task_run_name is not None:
        parameters = task.bind(args, kwargs)
        row["name"] = task.format_run_name(parameters)

    context = TaskRunContext(run_id, task.name, flow_run)

    def info() -> RunInfo:
        return RunInfo(run_id, row["name"], row["run_count"], parameters or task.bind(args, kwargs))

    def on_attempt(attempt: int) -> None:
        row["run_count"] = attempt
        row["state_type"] = StateType.RUNNING.value
        row["state_name"] = "Running" if attempt == 1 else "Retrying"
        if row["started_at"] is None:
            row["started_at"] = time.time()
        writer.put_task_run(dict(row))

    def on_retry(state: State, attempt: int, delay: float) -> None:
        row["state_type"] = StateType.RETRYING.value
        row["state_name"] = "AwaitingRetry" if delay > 0 else "Retrying"
        row["error"] = state.message
        writer.put_task_run(dict(row))

    def retry_allowed(state: State) -> bool:
        if task.retry_policy.condition is None:
            return True
        try:
            return bool(task.retry_policy.condition(task, info(), state))
        except Exception:
            logger.exception("retry_condition_fn of task %s failed; not retrying", task.name)
            return False

    flow_token = current_flow_run.set(flow_run)
    task_token = current_task_run.set(context)
    try:
        state = await _attempts(
            lambda: _call(task.fn, task.is_async, args, kwargs),
            task.retry_policy,
            task.timeout_seconds,
            on_attempt,
            on_retry,
            retry_allowed,
        )
    except BaseException as error:
        crashed = Crashed(f"the task run was interrupted: {type(error).__name__}", error)
        _finish_task_row(row, crashed)
        writer.put_task_run(row)
        raise
    finally:
        current_task_run.reset(task_token)
        current_flow_run.reset(flow_token)
    _finish_task_row(row, state)
    writer.put_task_run(row)
    hooks = task.on_completion if state.is_completed() else task.on_failure
    if hooks:
        await _run_hooks(hooks, task, info(), state)
    return state


def _finish_task_row(row: dict[str, Any], state: State) -> None:
    row["state_type"] = state.type.value
    row["state_name"] = state.name
    row["error"] = None if state.is_completed() else state.message
    row["ended_at"] = time.time()


def submit_task(
    task: Task[Any, Any],
    flow_run: FlowRunContext,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    wait_for: Iterable[TaskFuture[Any]] = (),
) -> TaskFuture[Any]:
    """Start a task run concurrently with the caller and return its future."""
    run_id = new_id()
    coroutine = run_task(task, flow_run, args, kwargs, tuple(wait_for), run_id)
    loop = flow_run.loop
    on_loop = _running_loop() is loop
    future: asyncio.Future[State] | Any
    if on_loop:
        future = loop.create_task(coroutine)
    else:
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
    task_future: TaskFuture[Any] = TaskFuture(future, loop, run_id, task.name)
    flow_run.futures.append(task_future)
    return task_future


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# -- flow runs -------------------------------------------------------------------------


async def run_flow(
    flow: Flow[Any, Any],
    writer: RunWriter,
    *,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    raw_parameters: bytes | None = None,
    event: EventInfo | None = None,
    parent: FlowRunContext | None = None,
    worker_id: str | None = None,
    retry_of: str | None = None,
    flow_run_id: str | None = None,
) -> State:
    """Run `flow` once, recorded through `writer`, and return its final state.

    Parameters come from `args`/`kwargs` (a direct call) or from `raw_parameters`,
    a JSON document (an event). Invalid parameters end the run FAILED without
    calling the flow; nothing is raised.
    """
    run_id = flow_run_id or new_id()
    writer.ensure_flow(flow.name, flow.version)
    now = time.time()
    row: dict[str, Any] = {
        "id": run_id,
        "flow_name": flow.name,
        "name": None,
        "state_type": StateType.RUNNING.value,
        "state_name": "Running",
        "parameters": None,
        "result": None,
        "error": None,
        "run_count": 0,
        "parent_flow_run_id": parent.flow_run_id if parent else None,
        "retry_of": retry_of,
        "worker_id": worker_id,
        "event_source": event.source if event else None,
        "event_partition": event.partition if event else None,
        "event_offset": event.offset if event else None,
        "event_id": event.id if event else None,
        "event_key": event.key if event else None,
        "event_payload": event.payload if event else None,
        "created_at": now,
        "started_at": now,
        "ended_at": None,
    }
    try:
        if raw_parameters is not None:
            parameters = flow.validate_json(raw_parameters)
        else:
            parameters = flow.validate(args, kwargs or {})
    except ParameterValidationError as error:
        state = Failed(error, "Failed")
        row["started_at"] = None
        if raw_parameters is not None and event is None:
            row["parameters"] = raw_parameters.decode("utf-8", "replace")
        _finish_flow_row(row, state)
        writer.put_flow_run(row)
        if flow.on_failure:
            await _run_hooks(flow.on_failure, flow, RunInfo(run_id, run_id, 0, {}), state)
        return state

    if raw_parameters is not None and event is not None and event.payload is raw_parameters:
        row["parameters"] = None  # the payload column already holds them
    else:
        row["parameters"] = _json(parameters)
    if flow.flow_run_name is not None:
        row["name"] = flow.format_run_name(parameters)
    writer.put_flow_run(dict(row))

    loop = asyncio.get_running_loop()
    context = FlowRunContext(run_id, flow.name, writer, loop, flow.log_prints)

    def info() -> RunInfo:
        return RunInfo(run_id, row["name"] or run_id, row["run_count"], parameters)

    def on_attempt(attempt: int) -> None:
        row["run_count"] = attempt
        if attempt > 1:
            row["state_type"] = StateType.RUNNING.value
            row["state_name"] = "Retrying"
            writer.put_flow_run(dict(row))

    def on_retry(state: State, attempt: int, delay: float) -> None:
        row["state_type"] = StateType.RETRYING.value
        row["state_name"] = "AwaitingRetry" if delay > 0 else "Retrying"
        row["error"] = state.message
        writer.put_flow_run(dict(row))

    async def invoke() -> Any:
        try:
            return await _call(flow.fn, flow.is_async, (), parameters)
        finally:
            await _finish_forgotten(context)

    token = current_flow_run.set(context)
    try:
        state = await _attempts(invoke, flow.retry_policy, flow.timeout_seconds, on_attempt, on_retry, lambda _s: True)
    except BaseException as error:
        crashed = Crashed(f"the flow run was interrupted: {type(error).__name__}", error)
        _finish_flow_row(row, crashed)
        writer.put_flow_run(row)
        if flow.on_crashed:
            await asyncio.shield(_run_hooks(flow.on_crashed, flow, info(), crashed))
        raise
    finally:
        current_flow_run.reset(token)
    _finish_flow_row(row, state)
    writer.put_flow_run(row)
    hooks = flow.on_completion if state.is_completed() else flow.on_failure
    if hooks:
        await _run_hooks(hooks, flow, info(), state)
    return state


async def _finish_forgotten(context: FlowRunContext) -> None:
    """Wait for task runs the flow submitted and never waited on."""
    pending = [f for f in context.futures if not f.done()]
    while pending:
        await asyncio.wait([asyncio.ensure_future(f.wait_async()) for f in pending])
        pending = [f for f in context.futures if not f.done()]


def _finish_flow_row(row: dict[str, Any], state: State) -> None:
    row["state_type"] = state.type.value
    row["state_name"] = state.name
    row["ended_at"] = time.time()
    if state.is_completed():
        row["error"] = None
        row["result"] = None if state.data is None else _json(state.data)
    else:
        row["error"] = state.message
