"""The engine: runs one flow run, with retries, timeouts and records; the attempt
loop, hooks and states that task runs (`_task_runs`) share with it.

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
from typing import TYPE_CHECKING, Any

import orjson
from pydantic_core import to_jsonable_python

from ._context import FlowRunContext, current_flow_run
from ._errors import FencedError, ParameterValidationError, RunTimeoutError
from ._ids import new_id
from ._logging import flow_logger, get_run_logger
from ._metrics import RECORDER
from ._names import default_run_name
from ._outbox import keep_published, run_identity
from ._retries import RetryPolicy
from ._states import (
    Completed,
    Failed,
    State,
    StateType,
    cancel_request,
    failure_of,
    fenced_out,
    interrupted,
)
from ._threads import Pool, run_sync
from ._tracebacks import format_traceback, task_failure
from ._tracing import TRACING

if TYPE_CHECKING:
    from ._flows import Flow
    from ._resume import Resume
    from ._store._fences import Fence
    from ._store._writer import RunWriter

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


def json_text(value: Any) -> str | None:
    """A value as stored (a run's parameters, a result): JSON text, or None if too long."""
    try:
        text = orjson.dumps(value, default=to_jsonable_python).decode()
    except (TypeError, ValueError):
        text = orjson.dumps(repr(value)).decode()
    return text if len(text) <= _RESULT_LIMIT else None


class Attempts:
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


async def run_attempts(
    fn: Callable[..., Any],
    is_async: bool,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    policy: RetryPolicy,
    timeout: float | None,
    record: Attempts,
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
        except FencedError as error:  # its worker lost its claim: not a failure, not retried
            return fenced_out(error)
        except Exception as error:
            state = Failed(error)
        retry_number = attempt - 1
        if retry_number >= policy.retries or not record.retry_allowed(state):
            return state
        delay = policy.delay(retry_number)
        record.on_retry(state, attempt, delay)
        if delay > 0:
            await asyncio.sleep(delay)


async def run_hooks(hooks: Iterable[Callable[..., Any]], *args: Any) -> None:
    """Call each hook (sync ones off the loop); a failing hook is logged, never raised."""
    for hook in hooks:
        try:
            if inspect.iscoroutinefunction(hook):
                await hook(*args)
            else:
                await run_sync(hook, *args)
        except Exception:
            logger.exception("hook %s failed", getattr(hook, "__name__", hook))


PENDING = StateType.PENDING.value
RUNNING = StateType.RUNNING.value
RETRYING = StateType.RETRYING.value
COMPLETED = StateType.COMPLETED.value
STATE_TEXT = {state_type: state_type.value for state_type in StateType}
"""The plain string of each state type, for rows (`.value` on an enum is slow)."""


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


class _FlowRunRecord(Attempts):
    __slots__ = ("before_retry", "parameters", "row", "span", "writer")

    def __init__(
        self, row: dict[str, Any], writer: RunWriter, parameters: dict[str, Any], span: Any
    ) -> None:
        self.row = row
        self.writer = writer
        self.parameters = parameters
        self.before_retry: Callable[[], None] | None = None
        self.span = span  # OpenTelemetry's, None while tracing is off (eventflow/_tracing.py)

    def info(self) -> RunInfo:
        row = self.row
        return RunInfo(row["id"], row["name"] or row["id"], row["run_count"], self.parameters)

    def on_attempt(self, attempt: int) -> None:
        row = self.row
        if attempt == 1:
            row["run_count"] = 1
        else:
            row.update(run_count=attempt, state_type=RUNNING, state_name="Retrying")
            self.writer.put_flow_run(row)
            if self.before_retry is not None:
                self.before_retry()

    def on_retry(self, state: State, attempt: int, delay: float) -> None:
        row = self.row
        name = "AwaitingRetry" if delay > 0 else "Retrying"
        row.update(state_type=RETRYING, state_name=name, error=state.message)
        self.writer.put_flow_run(row)
        if self.span is not None:
            TRACING.retried(self.span, state, attempt, delay)
        RECORDER.retried("flow", row["flow_name"])
        get_run_logger().info(
            "flow run failed (attempt %d), retrying in %gs: %s", attempt, delay, state.message
        )

    def finish(self, state: State) -> None:
        row = self.row
        state.run_id = row["id"]
        ended = time.time()
        if state.type is StateType.COMPLETED:
            result = None if state.data is None else json_text(state.data)
            row.update(
                state_type=COMPLETED,
                state_name=state.name,
                ended_at=ended,
                error=None,
                result=result,
            )
        else:
            error = failure_of(state)
            cause = task_failure(error)  # a task run's own error, not "upstream did not complete"
            row.update(
                state_type=STATE_TEXT[state.type],
                state_name=state.name,
                ended_at=ended,
                error=cause.message if cause is not None and cause.message else state.message,
                traceback=None if error is None else stored_traceback(error),
            )
            if state.type is StateType.FAILED or (
                state.type is StateType.CRASHED and state.name != "FencedOut"
            ):
                _log_failed_run(row, self.writer, state)
        self.writer.put_flow_run(row)
        if self.span is not None:
            TRACING.finished(self.span, row, state)
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
    fence: Fence | None = None,
) -> State:
    """Run `flow` once, recorded through `writer`, and return its final state.

    Parameters come from `args`/`kwargs` (a direct call) or from `raw_parameters`,
    a JSON document (an event; `decoded`: that document if a flow control has
    decoded it already, so it is not parsed twice). Invalid parameters end the run FAILED without
    calling the flow; nothing is raised. With `resume`, task calls reuse the
    results that run kept (eventflow/_resume.py). With `fence` (a worker's claim),
    its records carry the claim's token: the store refuses them once it is lost.
    """
    run_id = flow_run_id or new_id()
    writer.ensure_flow(flow.name, flow.version)
    now = time.time()
    row: dict[str, Any] = {
        "id": run_id,
        "flow_name": flow.name,
        "name": default_run_name(run_id),
        "state_type": RUNNING,
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
        "fence": None if fence is None else fence.token,
    }
    span = TRACING.flow_started(row) if TRACING.on else None
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
        record = _FlowRunRecord(row, writer, {}, span)
        state = Failed(error)
        record.finish(state)
        if flow.on_failure:
            await run_hooks(flow.on_failure, flow, record.info(), state)
        return state

    if event is None or event.payload is not raw_parameters:
        row["parameters"] = json_text(parameters)  # else the payload column holds them already
    if flow.flow_run_name is not None:
        row["name"] = flow.format_run_name(parameters)
    writer.put_flow_run(row)
    record = _FlowRunRecord(row, writer, parameters, span)
    context = FlowRunContext(run_id, flow.name, writer, asyncio.get_running_loop(), flow.log_prints)
    context.resume = resume
    context.identity = run_identity(flow.name, run_id, event, parent)
    record.before_retry = context.resume_attempt if flow.retry_resumes else context.new_attempt
    context.fence = fence
    context.span = span
    token = current_flow_run.set(context)
    trace_token = None if span is None else TRACING.enter(span)
    try:
        state = await run_attempts(
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
        if context.outbox and state.type is StateType.COMPLETED:
            keep_published(context, row, parent)  # before the row says COMPLETED
    except BaseException as error:
        ended = interrupted("flow", error)
        request = cancel_request(error)
        if request is not None and request.linked_run_id is not None:
            row["linked_run_id"] = request.linked_run_id  # the run that superseded it
        for task_record in list(context.running):  # not reached by the interruption
            task_record.finish(interrupted("task", error))
        record.finish(ended)
        if ended.type is StateType.CRASHED and flow.on_crashed:
            await asyncio.shield(run_hooks(flow.on_crashed, flow, record.info(), ended))
        raise
    finally:
        current_flow_run.reset(token)
        if trace_token is not None:
            TRACING.leave(trace_token)
    record.finish(state)
    hooks = flow.on_completion if state.type is StateType.COMPLETED else flow.on_failure
    # (fenced out: whoever holds its claim now runs it; a hook runs in the run's span)
    if hooks and state.name != "FencedOut":
        await TRACING.within(span, run_hooks(hooks, flow, record.info(), state))
    return state


def stored_traceback(error: BaseException) -> str | None:
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
