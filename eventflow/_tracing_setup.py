"""How `OTEL_*` variables set up the OpenTelemetry SDK when no TracerProvider is set.

The SDK's own `TracerProvider` with a batching span processor (spans are
queued and exported from its thread, never on the event loop) and the exporter
`OTEL_TRACES_EXPORTER` names: OTLP (http/protobuf, or gRPC when
`OTEL_EXPORTER_OTLP_PROTOCOL=grpc` and its package is installed) or console.
The service name defaults to `eventflow`; everything else (sampler, batch
sizes, endpoint, resource) the SDK reads itself. Only `eventflow/_tracing.py`
calls this, and only when the variables ask for spans.
"""

from __future__ import annotations

import logging
import os
from typing import Any

logger = logging.getLogger("eventflow.tracing")

MISSING = (
    "OTEL_* variables ask for traces, but OpenTelemetry is not installed:"
    ' pip install "eventflow[otel]"'
)


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def export_requested() -> bool:
    """Whether `OTEL_*` variables ask for spans to be exported."""
    if _truthy("OTEL_SDK_DISABLED"):
        return False
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_sdk() -> bool:
    """Set the SDK's TracerProvider as the global one; False (and why, logged) if it
    cannot be: the SDK or the exporter is not installed, or the exporter is unknown."""
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
    except ImportError:
        logger.warning(MISSING)
        return False
    exporter: SpanExporter | None = _exporter()
    if exporter is None:
        return False
    attributes: dict[str, str] = {}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes[SERVICE_NAME] = "eventflow"
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    logger.info("tracing: exporting spans (%s)", type(exporter).__name__)
    return True


def _exporter() -> Any:
    """The span exporter `OTEL_TRACES_EXPORTER` names (otlp by default, or console)."""
    name = (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        logger.warning("tracing: OTEL_TRACES_EXPORTER=%s is not supported; spans stay off", name)
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            logger.warning(
                "tracing: OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs"
                " opentelemetry-exporter-otlp-proto-grpc; spans stay off"
            )
            return None
        return GrpcExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        logger.warning('tracing: the OTLP exporter is missing: pip install "eventflow[otel]"')
        return None
    return OTLPSpanExporter()
