"""The trace context in its written forms: a W3C `traceparent` string (what the store
keeps with each run) and message headers (Kafka's (key, bytes) pairs, an HTTP poll's
response headers), read through OpenTelemetry's propagators."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.trace import Span

Headers = Sequence[tuple[str, bytes]]


def traceparent(span: Span) -> str | None:
    """The W3C `traceparent` of `span` (what the store keeps)."""
    span_context = span.get_span_context()
    if not span_context.is_valid:
        return None
    flags = int(span_context.trace_flags)
    return f"00-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def trace_id_of(value: str | None) -> str | None:
    """The trace id in a stored `traceparent`, or None."""
    if not value or len(value) < 35 or value[2] != "-":
        return None
    return value[3:35]


class _HeaderGetter:
    """Reads a context from Kafka-style headers: (key, bytes) pairs."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        values = [
            v.decode("latin-1") if isinstance(v, bytes) else str(v)
            for k, v in carrier
            if k.lower() == key and v is not None
        ]
        return values or None

    def keys(self, carrier: Headers) -> list[str]:
        return [k for k, _v in carrier]


KAFKA_GETTER: Any = _HeaderGetter()


TRACE_HEADERS = ("traceparent", "tracestate")


def trace_headers(mapping: Mapping[str, str]) -> tuple[tuple[str, bytes], ...]:
    """The trace context in HTTP headers (a poll's response), as event headers."""
    found = ((name, mapping.get(name)) for name in TRACE_HEADERS)
    return tuple((name, value.encode("latin-1")) for name, value in found if value)
