"""OpenTelemetry tracing: a span per flow run, per task run and per published message.

eventflow calls the OpenTelemetry *API* only, so the `TracerProvider` the
process has (the user's, or one an agent like `opentelemetry-instrument` set
up) gets the spans. With none set, `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_TRACES_EXPORTER`) makes eventflow set up the SDK's, with a batching
span processor and the OTLP exporter (`eventflow[otel]`); every other `OTEL_*`
variable (service name, sampler, batch sizes) is read by the SDK itself.

With neither, tracing stays off: nothing of OpenTelemetry is imported, no
thread starts, and the engine's cost is one attribute check per run
(`TRACING.on`). The switch is thrown once per worker (`setup`, when its
subscriptions are built) and on each top-level direct call of a flow.

Spans (kinds and attributes after OpenTelemetry's messaging conventions):

- a flow run: CONSUMER for a run of an event, INTERNAL for a direct call, a
  schedule's tick or a subflow; a child of the event's `traceparent` header
  (of the calling run for a subflow); a resumed or retried run links to the
  run it resumes or retries (and, with no header of its own, continues its trace);
- a task run: a child of its flow run, each retry an event on it;
- a published message (`producer_span`): PRODUCER, a child of the code that
  sends it, its context injected into the message's headers.

Each flow run keeps its span's `traceparent` in the store (`trace_context`),
for the UI's trace link and for the runs that resume it.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import logging
import sys
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ._trace_context import KAFKA_GETTER, Headers, trace_headers, trace_id_of, traceparent
from ._tracing_setup import MISSING, configure_sdk, export_requested

if TYPE_CHECKING:
    from opentelemetry.trace import Link, Span, Tracer, TracerProvider

    from ._states import State

logger = logging.getLogger("eventflow.tracing")

T = TypeVar("T")

INSTRUMENTATION = "eventflow"
MAX_BATCH_LINKS = 128
SCHEDULE_PREFIX = "schedule:"

__all__ = ["TRACING", "Tracing", "trace_headers", "trace_id_of", "traceparent"]


@dataclass(frozen=True, slots=True)
class Incoming:
    """What the runtime knows of the next flow run's origin, beyond its row."""

    links: tuple[Link, ...] = ()
    system: str | None = None
    batch: int = 0
    """The events of a batch's run (CONSUMER, linked to each event's context), else 0."""


_incoming: contextvars.ContextVar[Incoming | None] = contextvars.ContextVar(
    "eventflow_trace_incoming", default=None
)


class Tracing:
    """The process's switch and tracer (one instance: `TRACING`)."""

    __slots__ = ("_pinned", "_warned", "on", "tracer")

    def __init__(self) -> None:
        self.on = False
        self.tracer: Tracer | None = None
        self._pinned: list[Tracer] = []
        self._warned = False

    # -- switching on and off -----------------------------------------------------------

    def setup(self) -> bool:
        """Turn tracing on if a TracerProvider is set, or set one up if `OTEL_*` ask;
        whether tracing is on. Cheap when it stays off: nothing is imported."""
        if self._pinned:
            return True
        requested = export_requested()
        if "opentelemetry.trace" not in sys.modules and not requested:
            self._use(None)  # no one imported the API: no provider can be set
            return False
        try:
            from opentelemetry import trace
        except ImportError:
            self._warn_missing(requested)
            self._use(None)
            return False
        provider = trace.get_tracer_provider()
        if _unset(provider):
            if not requested or not configure_sdk():
                self._use(None)
                return False
            provider = trace.get_tracer_provider()
        self._use(provider)
        return True

    def _use(self, provider: TracerProvider | None) -> None:
        if provider is None:
            self.on, self.tracer = False, None
            return
        _api.load()
        self.tracer = provider.get_tracer(INSTRUMENTATION, _version())
        self.on = True

    def pin(self, provider: TracerProvider) -> None:
        """Send eventflow's spans to `provider` until `unpin` (TestApp's collector)."""
        _api.load()
        tracer = provider.get_tracer(INSTRUMENTATION, _version())
        self._pinned.append(tracer)
        self.tracer, self.on = tracer, True

    def unpin(self) -> None:
        self._pinned.pop()
        if self._pinned:
            self.tracer = self._pinned[-1]
        else:
            self.setup()

    def _warn_missing(self, requested: bool) -> None:
        if requested and not self._warned:
            self._warned = True
            logger.warning(MISSING)

    # -- the runtime's side ---------------------------------------------------------------

    @contextlib.contextmanager
    def incoming(
        self,
        headers: Headers,
        system: str | None = None,
        earlier: str | None = None,
        relation: str = "resumes",
    ) -> Iterator[None]:
        """Around the run of an event: its producer's context (from `headers`) is the
        parent; `earlier` is the stored `traceparent` of the run it resumes or retries
        (`relation`): a link, and the parent when the headers carry none."""
        from opentelemetry import context, propagate, trace

        parent = propagate.extract(headers, getter=KAFKA_GETTER) if headers else None
        links: tuple[Link, ...] = ()
        if earlier:
            previous = propagate.extract({"traceparent": earlier})
            span_context = trace.get_current_span(previous).get_span_context()
            if span_context.is_valid:
                links = (trace.Link(span_context, {"eventflow.link": relation}),)
                if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
                    parent = previous
        token = context.attach(parent) if parent is not None else None
        marker = _incoming.set(Incoming(links, system))
        try:
            yield
        finally:
            _incoming.reset(marker)
            if token is not None:
                context.detach(token)

    @contextlib.contextmanager
    def incoming_batch(self, batch: Sequence[Headers], system: str | None) -> Iterator[None]:
        """Around the one run of a batch of events: a link to each event's context (as
        the messaging conventions have it for batches), at most `MAX_BATCH_LINKS`."""
        from opentelemetry import propagate, trace

        links: list[Link] = []
        for headers in batch:
            if headers and len(links) < MAX_BATCH_LINKS:
                found = trace.get_current_span(propagate.extract(headers, getter=KAFKA_GETTER))
                if found.get_span_context().is_valid:
                    links.append(trace.Link(found.get_span_context()))
        marker = _incoming.set(Incoming(tuple(links), system, batch=len(batch)))
        try:
            yield
        finally:
            _incoming.reset(marker)

    # -- the engine's side ----------------------------------------------------------------

    def flow_started(self, row: dict[str, Any]) -> Span:
        """A started flow run's span (the current context is its parent); its
        `traceparent` goes into the row."""
        assert self.tracer is not None
        incoming = _incoming.get()
        if incoming is not None:
            _incoming.set(None)  # the event's, not its subflows'
        else:
            incoming = Incoming()
        source = row["event_source"]
        attributes: dict[str, Any] = {
            "eventflow.flow.name": row["flow_name"],
            "eventflow.flow_run.id": row["id"],
        }
        for key, column in (
            ("eventflow.flow_run.parent_id", "parent_flow_run_id"),
            ("eventflow.flow_run.retry_of", "retry_of"),
            ("eventflow.flow_run.resumed_from", "resumed_from"),
            ("eventflow.worker.id", "worker_id"),
            ("eventflow.event.id", "event_id"),
            ("eventflow.event.source", "event_source"),
        ):
            value = row[column]
            if value is not None:
                attributes[key] = value
        kind = _api.INTERNAL
        if incoming.batch:
            kind = _api.CONSUMER
            if incoming.system is not None:
                attributes["messaging.system"] = incoming.system
            attributes["messaging.operation.type"] = "process"
            attributes["messaging.batch.message_count"] = incoming.batch
        elif source is not None and not source.startswith(SCHEDULE_PREFIX):
            kind = _api.CONSUMER
            if incoming.system is not None:
                attributes["messaging.system"] = incoming.system
            attributes["messaging.operation.type"] = "process"
            attributes["messaging.operation.name"] = "process"
            attributes["messaging.destination.name"] = source
            if row["event_partition"] is not None:
                attributes["messaging.destination.partition.id"] = str(row["event_partition"])
            if row["event_offset"] is not None:
                attributes["messaging.kafka.offset"] = row["event_offset"]
            if row["event_group"] is not None:
                attributes["messaging.consumer.group.name"] = row["event_group"]
            if row["event_key"] is not None:
                attributes["messaging.kafka.message.key"] = row["event_key"]
        span = self.tracer.start_span(
            f"flow {row['flow_name']}", kind=kind, attributes=attributes, links=incoming.links
        )
        row["trace_context"] = traceparent(span)
        return span

    def task_started(self, row: dict[str, Any], parent: Span | None) -> Span:
        """A task run's span, a child of `parent`, else of the current context (its flow
        run's span, or that of the task that called it)."""
        assert self.tracer is not None
        return self.tracer.start_span(
            f"task {row['task_name']}",
            context=None if parent is None else _api.set_span_in_context(parent),
            attributes={
                "eventflow.task.name": row["task_name"],
                "eventflow.task_run.id": row["id"],
                "eventflow.task_run.name": row["name"],
                "eventflow.flow_run.id": row["flow_run_id"],
            },
        )

    def task_entered(self, record: Any, flow_run: Any, carried: bool) -> object:
        """Start a task run's span (`record.span`) and make it current; the token to
        `leave` with. The flow run's span is its parent unless the context `carried`
        one (the flow run's, or that of the task calling this one)."""
        span = record.span = self.task_started(record.row, None if carried else flow_run.span)
        return self.enter(span)

    def enter(self, span: Span) -> object:
        """Make `span` the current one (what user code, its logs and sinks see)."""
        return _api.attach(_api.set_span_in_context(span))

    async def within(self, span: Span | None, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` with `span` current (as it is, without a span)."""
        if span is None:
            return await awaitable
        token = self.enter(span)
        try:
            return await awaitable
        finally:
            self.leave(token)

    def leave(self, token: object) -> None:
        _api.detach(token)

    def retried(self, span: Span, state: State, attempt: int, delay: float) -> None:
        """A failed attempt that will be retried: an event on the run's span."""
        attributes: dict[str, Any] = {
            "eventflow.attempt": attempt,
            "eventflow.retry_delay_s": float(delay),
            "eventflow.state_name": state.name,
        }
        if isinstance(state.data, BaseException):
            attributes["exception.type"] = type(state.data).__qualname__
            attributes["exception.message"] = str(state.data)
        elif state.message:
            attributes["exception.message"] = state.message
        span.add_event("retry", attributes)

    def finished(self, span: Span, row: dict[str, Any], state: State) -> None:
        """End a run's span with its final state (a failure: its exception, status ERROR)."""
        span.set_attributes(
            {
                "eventflow.state": row["state_type"],
                "eventflow.state_name": row["state_name"],
                "eventflow.run_count": row["run_count"],
            }
        )
        if row["state_type"] != "COMPLETED":
            from opentelemetry.trace import Status, StatusCode

            error = state.data if isinstance(state.data, BaseException) else None
            if error is not None:
                span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, row.get("error") or state.message or None))
        span.end(int(row["ended_at"] * 1e9) if row.get("ended_at") else None)

    # -- sinks and clients ----------------------------------------------------------------

    @contextlib.contextmanager
    def producer_span(
        self, system: str, destination: str, headers: Headers, **attributes: Any
    ) -> Iterator[list[tuple[str, bytes]]]:
        """A PRODUCER span around one publish; yields `headers` with its context.

        Its parent is the current span (the task run that publishes), or, with
        none, the context `headers` carry already (a dead letter continues the
        trace of the message it forwards).
        """
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind

        assert self.tracer is not None
        parent = None
        if headers and not trace.get_current_span().get_span_context().is_valid:
            parent = propagate.extract(headers, getter=KAFKA_GETTER)
        span_attributes = {
            "messaging.system": system,
            "messaging.destination.name": destination,
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            **{k: v for k, v in attributes.items() if v is not None},
        }
        with self.tracer.start_as_current_span(
            f"publish {destination}",
            context=parent,
            kind=SpanKind.PRODUCER,
            attributes=span_attributes,
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            kept = [(k, v) for k, v in headers if k.lower() not in carrier]
            yield kept + [(k, v.encode()) for k, v in carrier.items()]

    def published(self, partition: int | None, offset: int | None) -> None:
        """Where the message of the current producer span went (the broker's answer)."""
        from opentelemetry import trace

        span = trace.get_current_span()
        if partition is not None:
            span.set_attribute("messaging.destination.partition.id", str(partition))
        if offset is not None:
            span.set_attribute("messaging.kafka.offset", offset)

    def current_headers(self) -> dict[str, str]:
        """The current context as HTTP headers (`traceparent`, `tracestate`); {} when off."""
        if not self.on:
            return {}
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    def current_ids(self) -> tuple[str, str] | None:
        """The current span's trace id and span id in hex, for log lines; None if none."""
        from opentelemetry import trace

        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        return f"{span_context.trace_id:032x}", f"{span_context.span_id:016x}"


def _version() -> str | None:
    """eventflow's version, for the instrumentation scope (read from the installed
    package: `eventflow/__init__.py` imports the runtime, which the core must not)."""
    try:
        return importlib.metadata.version("eventflow")
    except importlib.metadata.PackageNotFoundError:
        return None


class _Api:
    """The API's callables the engine's hooks use, imported once tracing is on (a
    function-level import on every run costs more than the attribute it reads)."""

    INTERNAL: Any = None
    CONSUMER: Any = None
    set_span_in_context: Any = None
    attach: Any = None
    detach: Any = None

    def load(self) -> None:
        if self.attach is not None:
            return
        from opentelemetry import context, trace

        self.INTERNAL, self.CONSUMER = trace.SpanKind.INTERNAL, trace.SpanKind.CONSUMER
        self.set_span_in_context = trace.set_span_in_context
        self.attach, self.detach = context.attach, context.detach


_api = _Api()


def _unset(provider: object) -> bool:
    """Whether `provider` is the API's stand-in (no provider was set) or a no-op one."""
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider

    return isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))


TRACING = Tracing()
