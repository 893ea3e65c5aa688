"""The public face of the streaming runtime: what connectors implement and the App."""

from ._errors import WorkerStoppingError
from ._retries import Backoff
from ._runtime._app import App
from ._runtime._liveness import Outage, RepeatFilter, SourceState, quiet_library_logs
from ._runtime._source import Event, EventSink, Partition, Sink, Source
from ._runtime._subscription import FailurePolicy, Notifier, Subscription
from ._tracing import TRACING, Tracing, trace_headers

__all__ = [
    "TRACING",
    "App",
    "Backoff",
    "Event",
    "EventSink",
    "FailurePolicy",
    "Notifier",
    "Outage",
    "Partition",
    "RepeatFilter",
    "Sink",
    "Source",
    "SourceState",
    "Subscription",
    "Tracing",
    "WorkerStoppingError",
    "quiet_library_logs",
    "trace_headers",
]
