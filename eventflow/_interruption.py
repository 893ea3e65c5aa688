"""Interruption: why the run in a task was cancelled, told by whoever cancels it.

The runtime cancels a run on purpose for several reasons (a flow control
superseded it, its partition was revoked, its worker was fenced out or shuts
down). Whoever cancels sets the reason on the run's `Interruption` first; the
engine reads it (`interrupted` in eventflow/_states.py) when the CancelledError
goes through the run, to record the state that reason means. The object is found
through a context variable: the run's task, its subflows and the task runs it
submits all see the one their run was started with.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    from ._states import CancelRequest

CancelReason: TypeAlias = "CancelRequest | str"
"""A flow control's request (the run ends CANCELLED), or what interrupted it (CRASHED)."""


class Interruption:
    """One run's task and why it was cancelled (None: not on purpose, e.g. a bug)."""

    __slots__ = ("reason", "task")

    def __init__(self, task: asyncio.Task[object] | None = None) -> None:
        self.task = task
        self.reason: CancelReason | None = None

    def cancel(self, reason: CancelReason) -> None:
        """Cancel the run, saying why (the last reason given is the one recorded)."""
        self.reason = reason
        if self.task is not None:
            self.task.cancel()

    def absorb(self) -> None:
        """The run caught the cancellation it was sent on purpose and goes on (it
        records the outcome itself): the task is no longer being cancelled."""
        self.reason = None
        if self.task is not None:
            self.task.uncancel()


CURRENT_RUN: ContextVar[Interruption | None] = ContextVar("eventflow_run", default=None)
"""The `Interruption` of the run the current task belongs to (None outside a runtime run
or a direct call's top-level task)."""


def cancel_reason(error: BaseException) -> CancelReason | None:
    """Why `error` went through the current run: the reason its canceller gave, if any."""
    if isinstance(error, asyncio.CancelledError):
        run = CURRENT_RUN.get()
        if run is not None:
            return run.reason
    return None
