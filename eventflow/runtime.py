"""The public face of the streaming runtime: the connector contract and the App.

A connector implements `Source` (and `Sink` to publish), talks to the runtime
through the `EventSink` it is handed, and may use the helpers below; nothing
else. See the guide "Writing a connector".
"""

from ._datasets import record_write
from ._errors import MissingExtraError, WorkerStoppingError
from ._extras import missing_extra
from ._retries import Backoff, parse_retry_after
from ._runtime._app import App
from ._runtime._liveness import Outage, RepeatFilter, quiet_library_logs
from ._runtime._source import Event, EventSink, Partition, Sink, Source
from ._runtime._subscription import FailurePolicy, Notifier, Subscription
from ._states import SourceState
from ._tracing import TRACING, Tracing, trace_headers

__all__ = [
    "TRACING",
    "App",
    "Backoff",
    "Event",
    "EventSink",
    "FailurePolicy",
    "MissingExtraError",
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
    "missing_extra",
    "parse_retry_after",
    "quiet_library_logs",
    "record_write",
    "trace_headers",
]
