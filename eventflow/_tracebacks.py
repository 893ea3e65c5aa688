"""Root causes kept with failed runs: a bounded traceback, and which task run failed a flow."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import traceback
from dataclasses import dataclass
from pathlib import Path

TRACEBACK_LIMIT = 16_000
"""Characters of a traceback kept with a run: its head and its innermost frames."""

_HEAD = 3_000

_MACHINERY = tuple(
    str(Path(path).parent) + os.sep
    for path in (asyncio.__file__, concurrent.futures.__file__, __file__)
    if path is not None
)
"""Where eventflow's engine, its threads and the event loop live: frames a user skips."""


@dataclass(frozen=True, slots=True)
class TaskFailure:
    """The task run whose own error failed a flow, carried on that error."""

    task_run_id: str
    task_run_name: str
    message: str | None


_ATTRIBUTE = "__eventflow_task_failure__"


def format_traceback(error: BaseException | None, limit: int = TRACEBACK_LIMIT) -> str | None:
    """`error`'s traceback (with its causes), cut in the middle beyond `limit` characters."""
    if error is None:
        return None
    summary = traceback.TracebackException.from_exception(error)
    _drop_machinery(summary, set())
    text = "".join(summary.format())
    if len(text) <= limit:
        return text
    tail = limit - _HEAD
    cut = len(text) - _HEAD - tail
    return f"{text[:_HEAD]}\n… {cut} characters cut …\n{text[-tail:]}"


def _drop_machinery(summary: traceback.TracebackException, seen: set[int]) -> None:
    """Leave out the frames of eventflow and of the loop, unless nothing else is left."""
    if id(summary) in seen:
        return
    seen.add(id(summary))
    user = [frame for frame in summary.stack if not frame.filename.startswith(_MACHINERY)]
    if user and len(user) < len(summary.stack):
        summary.stack = traceback.StackSummary.from_list(user)
    for linked in (summary.__cause__, summary.__context__, *(summary.exceptions or ())):
        if linked is not None:
            _drop_machinery(linked, seen)


def mark_task_failure(error: BaseException, failure: TaskFailure) -> None:
    """Record on `error` the task run it failed first (an error re-raised keeps its first)."""
    if task_failure(error) is None:
        with contextlib.suppress(AttributeError):  # a type with __slots__ and no __dict__
            setattr(error, _ATTRIBUTE, failure)


def task_failure(error: BaseException | None) -> TaskFailure | None:
    """The task run `error` came from, when a task run raised it (or failed its upstream)."""
    found = getattr(error, _ATTRIBUTE, None)
    return found if isinstance(found, TaskFailure) else None
