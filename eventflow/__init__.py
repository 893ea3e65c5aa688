"""eventflow: batch and streaming as one system.

Mark functions `@flow` and `@task`; call a flow directly to run it once (batch),
or bind it to a source and every event becomes one tracked flow run.
"""

from ._backfill import (
    BackfillError,
    BackfillFailure,
    BackfillProgress,
    BackfillResult,
    backfill,
    backfill_async,
)
from ._caching import task_input_hash
from ._context import FlowRunContext, TaskRunContext
from ._engine import EventInfo, RunInfo
from ._errors import (
    ConfigurationError,
    EventflowError,
    FencedError,
    MissingContextError,
    ParameterValidationError,
    RunNotFinishedError,
    RunTimeoutError,
    StoreError,
    SyncInAsyncError,
    UpstreamFailedError,
)
from ._flows import Flow, flow
from ._futures import TaskFuture
from ._logging import get_run_logger
from ._notify import Notification, WebhookNotifier, slack_body
from ._retries import exponential_backoff
from ._runtime._app import App
from ._settings import Settings
from ._states import State, StateType
from ._tasks import Task, task, unmapped

__version__ = "0.1.0"

__all__ = [
    "App",
    "BackfillError",
    "BackfillFailure",
    "BackfillProgress",
    "BackfillResult",
    "ConfigurationError",
    "EventInfo",
    "EventflowError",
    "FencedError",
    "Flow",
    "FlowRunContext",
    "MissingContextError",
    "Notification",
    "ParameterValidationError",
    "RunInfo",
    "RunNotFinishedError",
    "RunTimeoutError",
    "Settings",
    "State",
    "StateType",
    "StoreError",
    "SyncInAsyncError",
    "Task",
    "TaskFuture",
    "TaskRunContext",
    "UpstreamFailedError",
    "WebhookNotifier",
    "__version__",
    "backfill",
    "backfill_async",
    "exponential_backoff",
    "flow",
    "get_run_logger",
    "slack_body",
    "task",
    "task_input_hash",
    "unmapped",
]
