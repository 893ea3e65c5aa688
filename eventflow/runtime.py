"""The public face of the streaming runtime: what connectors implement and the App."""

from ._errors import WorkerStoppingError
from ._runtime._app import App
from ._runtime._source import Event, EventSink, Partition, Sink, Source
from ._runtime._subscription import FailurePolicy, Notifier, Subscription

__all__ = [
    "App",
    "Event",
    "EventSink",
    "FailurePolicy",
    "Notifier",
    "Partition",
    "Sink",
    "Source",
    "Subscription",
    "WorkerStoppingError",
]
