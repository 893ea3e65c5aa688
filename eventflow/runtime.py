"""The public face of the streaming runtime: the connector contract and the App.

A connector implements `Source` (and `Sink` to publish), talks to the runtime
through the `EventSink` it is handed, and may use the helpers below; nothing
else. See the guide "Writing a connector".
"""

from ._datasets import record_write
from ._errors import MissingExtraError, WorkerStoppingError
from ._extras import missing_extra
from ._outbox import (
    MESSAGE_ID_HEADER,
    PublishError,
    Transport,
    decode_headers,
    outbox_headers,
)
from ._outbox import publish as publish_to_outbox
from ._outbox import register as register_outbox
from ._retries import Backoff, parse_retry_after
from ._runtime._app import App
from ._runtime._liveness import Outage, RepeatFilter, quiet_library_logs
from ._runtime._source import DurableState, Event, EventSink, Partition, Sink, Source
from ._runtime._subscription import FailurePolicy, Notifier, Subscription
from ._states import SourceState
from ._tracing import TRACING, Tracing, trace_headers

__all__ = [
    "MESSAGE_ID_HEADER",
    "TRACING",
    "App",
    "Backoff",
    "DurableState",
    "Event",
    "EventSink",
    "FailurePolicy",
    "MissingExtraError",
    "Notifier",
    "Outage",
    "Partition",
    "PublishError",
    "RepeatFilter",
    "Sink",
    "Source",
    "SourceState",
    "Subscription",
    "Tracing",
    "Transport",
    "WorkerStoppingError",
    "decode_headers",
    "missing_extra",
    "outbox_headers",
    "parse_retry_after",
    "publish_to_outbox",
    "quiet_library_logs",
    "record_write",
    "register_outbox",
    "trace_headers",
]
