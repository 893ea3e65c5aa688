"""Run states: a small closed set of types, each state carrying a human name; and the
states a subscription is in (shown by the status line, the store, the UI and a gauge)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

from ._errors import RunNotFinishedError, describe_error
from ._interruption import cancel_reason


class StateType(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRYING = "RETRYING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"


FINAL_STATE_TYPES = (StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)
"""The states no worker changes once a run is in one (StrEnum members: equal to their names)."""

SourceState = Literal["running", "reconnecting", "stalled", "stopped"]
SOURCE_STATES: tuple[SourceState, ...] = ("running", "reconnecting", "stalled", "stopped")


@dataclass(slots=True)
class State:
    """Where a flow run or task run is.

    `name` refines `type` the way Prefect does: a RETRYING state is named
    "AwaitingRetry" while a delay applies, a FAILED one "TimedOut" after a timeout.
    `data` is the return value of a COMPLETED run, or the exception of a failed one;
    `run_id` is the flow run or task run the state belongs to, once final.
    """

    type: StateType
    name: str
    message: str | None = None
    data: Any = None
    timestamp: float = field(default_factory=time.time)
    run_id: str | None = None

    def is_final(self) -> bool:
        return self.type in FINAL_STATE_TYPES

    def is_completed(self) -> bool:
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        return self.type is StateType.CANCELLED

    def is_pending(self) -> bool:
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        return self.type is StateType.RUNNING

    def result(self, raise_on_failure: bool = True) -> Any:
        """The run's return value; its exception is raised if it did not complete."""
        if self.type is StateType.COMPLETED:
            return self.data
        if not self.is_final():
            raise RunNotFinishedError(f"the run is {self.name}, it has no result yet")
        if raise_on_failure:
            if isinstance(self.data, BaseException):
                raise self.data
            raise RuntimeError(self.message or f"the run ended {self.name}")
        return self.data

    def __repr__(self) -> str:
        message = f", message={self.message!r}" if self.message else ""
        return f"{self.name}(type={self.type.value}{message})"


def Pending(message: str | None = None) -> State:
    return State(StateType.PENDING, "Pending", message)


def Running() -> State:
    return State(StateType.RUNNING, "Running")


def Completed(data: Any = None) -> State:
    return State(StateType.COMPLETED, "Completed", None, data, time.time())  # once per run


def Failed(error: BaseException, name: str = "Failed") -> State:
    return State(StateType.FAILED, name, message=describe_error(error), data=error)


def Crashed(message: str, error: BaseException | None = None) -> State:
    return State(StateType.CRASHED, "Crashed", message=message, data=error)


def Cancelled(message: str, name: str = "Cancelled") -> State:
    return State(StateType.CANCELLED, name, message=message)


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Why a run is cancelled on purpose (a flow control), set on its `Interruption`.

    The run then ends CANCELLED under `name`, not CRASHED: nothing went wrong.
    """

    name: str
    message: str
    linked_run_id: str | None = None
    """The run that cancelled it (a later event of its key), shown with it."""


FENCED_OUT = "fenced out"
"""Why runs are cancelled when their worker lost the claim they ran under: they end
CRASHED "FencedOut", unlogged one by one (their worker says once what it lost), and
nothing of them is written (eventflow/_store/_fences.py)."""

REVOKED = "its partition was revoked"
"""Why a run still in flight when its partition's grace period ended is cancelled."""

SHUT_DOWN = "the worker shut down"
"""Why a run still in flight when the worker's shutdown grace period ended is cancelled."""


def cancel_request(error: BaseException) -> CancelRequest | None:
    """The request behind a deliberate cancellation, or None (an interruption: a crash)."""
    reason = cancel_reason(error)
    return reason if isinstance(reason, CancelRequest) else None


def interrupted(kind: str, error: BaseException) -> State:
    """The state of a run an exception went through: CANCELLED if a flow control
    cancelled it on purpose (`CancelRequest`), else CRASHED, saying why (the reason
    its canceller set on the run's `Interruption`, else the exception's type)."""
    reason = cancel_reason(error)
    if isinstance(reason, CancelRequest):
        return Cancelled(reason.message, reason.name)
    if reason == FENCED_OUT:
        return fenced_out(error)
    return Crashed(f"the {kind} run was interrupted: {reason or type(error).__name__}", error)


def fenced_out(error: BaseException) -> State:
    """The state of a run whose worker lost the claim it ran under (its records are
    refused by the store): CRASHED "FencedOut", not logged, no failure hook."""
    state = Crashed("its worker lost the claim it ran under (fenced out)", error)
    state.name = "FencedOut"
    return state


def failure_of(state: State) -> BaseException | None:
    """The exception of a FAILED state (not of a crash: that one's cause is outside the run)."""
    if state.type is StateType.FAILED and isinstance(state.data, BaseException):
        return state.data
    return None
