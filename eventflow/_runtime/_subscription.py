"""A subscription: one source bound to one flow, with its policies and counters.

`SubscriptionRunner` (`_runner`) runs it; this module holds what the rest of
eventflow reads about one (the options of `App.subscribe`, the counters a
status line or the metrics exporter read).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from .._flows import Flow
from .._notify import Notification
from ._control_options import Controls
from ._source import Event, Sink, Source

FailurePolicy = Literal["dead_letter", "skip", "stop"]
ParamsOverride = Mapping[str, Any] | Callable[[Event], Mapping[str, Any]]


class Notifier(Protocol):
    """Told of runs that end badly (see eventflow.WebhookNotifier); must not block."""

    def notify(self, notification: Notification) -> None: ...

    def close(self, timeout: float = ...) -> None: ...


SOURCE_CALL_TIMEOUT = 30.0
"""Seconds a call into a source or sink (a broker commit, a dead letter) may take."""

STORE_BACKLOG_LIMIT = 20_000
"""Records queued for the store beyond which consumption pauses until it catches up.

It bounds memory when the store is slower than the stream: at 200,000 the
queue alone grew a worker by 300 MB over 200,000 events (bench/kafka.py).
"""


@dataclass(frozen=True, slots=True)
class Subscription:
    """A source bound to a flow, with its policies (see `App.subscribe`)."""

    source: Source
    flow: Flow[Any, Any]
    on_failure: FailurePolicy = "dead_letter"
    dead_letter: Sink | None = None
    max_in_flight: int = 1024
    max_in_flight_per_partition: int = 256
    key_ordering: bool = True
    params: ParamsOverride | None = None
    revoke_grace_seconds: float = 10.0
    notifiers: tuple[Notifier, ...] = ()
    controls: Controls | None = None
    expect_every: float | None = None
    """Seconds within which the next event is due (lineage: late after that)."""

    @property
    def name(self) -> str:
        return f"{self.source.name}->{self.flow.name}"


@dataclass(slots=True)
class RunnerStats:
    """What a status line or a metrics exporter reads."""

    received: int = 0
    completed: int = 0
    failed: int = 0
    dead_lettered: int = 0
    skipped_duplicates: int = 0
    invalid: int = 0
    replayed: int = 0
    last_event_at: float | None = None
    waiting: dict[str, int] = field(
        default_factory=lambda: {
            "concurrency": 0,
            "rate_limit": 0,
            "idempotency": 0,
            "debounce": 0,
            "batch": 0,
        }
    )
    """Events held back now, by control (they count as in flight)."""
    decisions: dict[tuple[str, str], int] = field(default_factory=dict)
    """(control, decision) -> events, e.g. ("rate_limit", "throttled")."""
    fenced: dict[str, int] = field(default_factory=dict)
    """reason -> claims lost (partitions reassigned, lease taken over, frozen)."""

    def decide(self, control: str, decision: str, events: int = 1) -> None:
        key = (control, decision)
        self.decisions[key] = self.decisions.get(key, 0) + events
