"""One exception root for everything eventflow raises on its own account."""

from __future__ import annotations


class EventflowError(Exception):
    """Base class of every error raised by eventflow itself."""


class MissingContextError(EventflowError, RuntimeError):
    """A run-only API was used outside a flow run or task run."""


class ParameterValidationError(EventflowError, ValueError):
    """A flow's parameters did not validate against its signature."""


class RunTimeoutError(EventflowError, TimeoutError):
    """A flow run or task run exceeded its `timeout_seconds`."""


class UpstreamFailedError(EventflowError):
    """A task did not run because a task it depends on did not complete."""


class RunNotFinishedError(EventflowError):
    """The result of a run was asked for before the run reached a final state."""


class SyncInAsyncError(EventflowError, RuntimeError):
    """A blocking call was made on the event loop that would have to serve it."""


class StoreError(EventflowError):
    """The run store could not be used."""


class ConfigurationError(EventflowError, ValueError):
    """A setting or an option has a value eventflow cannot use."""


class WorkerStoppingError(EventflowError, RuntimeError):
    """Events were offered to a worker that is shutting down; they were not taken."""


class StoreNotInitialisedError(StoreError):
    """The store has no eventflow schema yet: nothing has run against it."""


class MissingExtraError(EventflowError, ImportError):
    """A feature needs a package of an optional extra that is not installed."""


class FencedError(EventflowError):
    """A worker lost its claim (its partitions were reassigned, its lease taken over, or it
    was frozen past the lease): what it was doing under that claim was dropped."""


def describe_error(error: BaseException) -> str:
    """`Type: message`, or the type alone when the message is empty (a TimeoutError):
    a log line never ends in an empty error."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
