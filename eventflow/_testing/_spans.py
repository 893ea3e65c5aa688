"""TestApp's span collector: eventflow's spans in memory, for assertions.

`TestApp(app, trace=True)` sends eventflow's spans to a TracerProvider of its
own (the SDK's, with an in-memory exporter) while it runs, whatever provider
the process has: the spans of a run are there as soon as the run has ended.
Needs `eventflow[otel]`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .._extras import missing_extra
from .._tracing import TRACING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan


class SpanCollector:
    """An SDK TracerProvider whose spans stay in memory, pinned as eventflow's."""

    def __init__(self) -> None:
        try:
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import SimpleSpanProcessor
            from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
                InMemorySpanExporter,
            )
        except ImportError as error:
            raise missing_extra("opentelemetry-sdk", "otel", "TestApp(trace=True)") from error
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self._pinned = False

    def start(self) -> None:
        TRACING.pin(self.provider)
        self._pinned = True

    def stop(self) -> None:
        if self._pinned:
            self._pinned = False
            TRACING.unpin()

    def spans(self, run_id: str | None = None) -> list[ReadableSpan]:
        """Every finished span, oldest end first; with `run_id`, that flow run's span
        and the spans under it (its task runs, what they published, its subflows)."""
        spans: Sequence[ReadableSpan] = self.exporter.get_finished_spans()
        if run_id is None:
            return list(spans)
        roots = {
            s.context.span_id
            for s in spans
            if s.context is not None
            and s.name.startswith("flow ")
            and (s.attributes or {}).get("eventflow.flow_run.id") == run_id
        }
        children: dict[int, list[ReadableSpan]] = {}
        for s in spans:
            if s.parent is not None:
                children.setdefault(s.parent.span_id, []).append(s)
        chosen = {id(s) for s in spans if s.context is not None and s.context.span_id in roots}
        frontier = list(roots)
        while frontier:
            for child in children.get(frontier.pop(), []):
                if id(child) not in chosen and child.context is not None:
                    chosen.add(id(child))
                    frontier.append(child.context.span_id)
        return [s for s in spans if id(s) in chosen]
