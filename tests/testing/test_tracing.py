"""Tracing without a collector: TestApp's in-memory spans, the OTEL_* configuration,
and the cost of nothing when OpenTelemetry is not there.

(The spans in a real Jaeger, through a real broker: tests/ops/test_tracing_jaeger.py.)
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind, StatusCode

from connectors.kafka import KafkaSource
from eventflow import App, flow, get_run_logger, task
from eventflow._logging import JsonFormatter
from eventflow._tracing import TRACING
from eventflow.testing import TestApp
from tests._services import ROOT

PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"

_flaky: dict[str, int] = {}


@task(retries=2)
async def enrich(order_id: str) -> str:
    _flaky[order_id] = _flaky.get(order_id, 0) + 1
    if _flaky[order_id] == 1:
        raise ConnectionError("no answer")
    return order_id.upper()


@task
def store(value: str) -> str:
    get_run_logger().info("stored %s", value)
    if value == "BAD":
        raise ValueError("cannot store BAD")
    return value


@flow(name="traced")
async def traced(id: str) -> str:
    return store(await enrich(id))


def app_and_source() -> tuple[App, KafkaSource]:
    source = KafkaSource("orders", bootstrap_servers="127.0.0.1:1", group_id="orders")
    app = App()
    app.subscribe(source, traced, on_failure="skip")
    return app, source


async def test_a_run_of_an_event_is_a_consumer_span_under_its_producer() -> None:
    app, orders = app_and_source()
    async with TestApp(app, trace=True) as test:
        run = await test.publish(
            orders, {"id": "a1"}, key="a1", headers={"traceparent": TRACEPARENT}
        )
        assert run.state == "COMPLETED"
        spans = {s.name: s for s in test.spans(run)}
    assert sorted(spans) == ["flow traced", "task enrich", "task store"]
    flow_span = spans["flow traced"]
    assert flow_span.kind is SpanKind.CONSUMER
    assert flow_span.context is not None and flow_span.parent is not None
    assert f"{flow_span.context.trace_id:032x}" == PARENT_TRACE == run.trace_id
    assert f"{flow_span.parent.span_id:016x}" == PARENT_SPAN
    assert flow_span.attributes is not None
    assert dict(flow_span.attributes) == {
        "eventflow.flow.name": "traced",
        "eventflow.flow_run.id": run.id,
        "eventflow.worker.id": flow_span.attributes["eventflow.worker.id"],
        "eventflow.event.id": run.event_id,
        "eventflow.event.source": "kafka:orders",
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": "kafka:orders",
        "messaging.destination.partition.id": "0",
        "messaging.kafka.offset": 0,
        "messaging.consumer.group.name": "orders",
        "messaging.kafka.message.key": "a1",
        "eventflow.state": "COMPLETED",
        "eventflow.state_name": "Completed",
        "eventflow.run_count": 1,
    }
    for name in ("task enrich", "task store"):  # a sync task's span too (a worker thread)
        span = spans[name]
        assert span.parent is not None and span.parent.span_id == flow_span.context.span_id
        assert span.attributes is not None
        assert span.attributes["eventflow.flow_run.id"] == run.id
    enrich_span = spans["task enrich"]
    assert enrich_span.attributes is not None and enrich_span.attributes["eventflow.run_count"] == 2
    (retry,) = enrich_span.events
    assert retry.name == "retry" and retry.attributes is not None
    assert retry.attributes["exception.type"] == "ConnectionError"
    assert retry.attributes["eventflow.attempt"] == 1


async def test_a_failed_run_records_its_exception_and_an_error_status() -> None:
    app, orders = app_and_source()
    async with TestApp(app, trace=True) as test:
        run = await test.publish(orders, {"id": "bad"})
        assert run.state == "FAILED"
        spans = {s.name: s for s in test.spans(run)}
    flow_span, store_span = spans["flow traced"], spans["task store"]
    assert flow_span.parent is None  # no context came with the event: a trace of its own
    for span in (flow_span, store_span):
        assert span.status.status_code is StatusCode.ERROR
        assert span.status.description == "ValueError: cannot store BAD"
        (exception,) = [e for e in span.events if e.name == "exception"]
        assert exception.attributes is not None
        assert exception.attributes["exception.type"] == "ValueError"
    assert spans["task enrich"].status.status_code is StatusCode.UNSET


async def test_spans_of_one_run_leave_the_others_out() -> None:
    app, orders = app_and_source()
    async with TestApp(app, trace=True) as test:
        first = await test.publish(orders, {"id": "r1"})
        second = await test.publish(orders, {"id": "r2"})
        assert len(test.spans()) == 6
        ids = {(s.attributes or {}).get("eventflow.flow_run.id") for s in test.spans(second.id)}
    assert ids == {second.id} != {first.id}


async def test_spans_need_trace_true() -> None:
    app, _orders = app_and_source()
    async with TestApp(app) as test:
        with pytest.raises(RuntimeError, match="trace=True"):
            test.spans()
    assert not TRACING.on


@flow(name="inner")
def inner(x: int) -> int:
    return x + 1


@flow(name="outer")
def outer(x: int) -> int:
    return inner(x) * 2


def test_direct_calls_and_subflows_are_internal_spans(default_store: str) -> None:
    from eventflow._testing._spans import SpanCollector

    collector = SpanCollector()
    collector.start()
    try:
        assert outer(1) == 4
    finally:
        collector.stop()
    spans = {s.name: s for s in collector.spans()}
    assert spans["flow outer"].kind is SpanKind.INTERNAL
    assert spans["flow inner"].kind is SpanKind.INTERNAL
    outer_context = spans["flow outer"].context
    assert outer_context is not None
    assert spans["flow inner"].parent is not None
    assert spans["flow inner"].parent.span_id == outer_context.span_id
    assert spans["flow inner"].attributes is not None
    assert (
        spans["flow inner"].attributes["eventflow.flow_run.parent_id"]
        == ((spans["flow outer"].attributes or {})["eventflow.flow_run.id"])
    )


def test_json_log_lines_carry_the_current_trace_and_span_ids() -> None:
    provider = TracerProvider()
    TRACING.pin(provider)
    try:
        with provider.get_tracer("test").start_as_current_span("work") as span:
            record = logging.LogRecord("eventflow.x", logging.INFO, __file__, 1, "hi", None, None)
            line = json.loads(JsonFormatter().format(record))
    finally:
        TRACING.unpin()
    context = span.get_span_context()
    assert line["trace_id"] == f"{context.trace_id:032x}"
    assert line["span_id"] == f"{context.span_id:016x}"
    record = logging.LogRecord("eventflow.x", logging.INFO, __file__, 1, "hi", None, None)
    assert "trace_id" not in json.loads(JsonFormatter().format(record))  # tracing off


def test_producer_spans_put_their_context_in_the_headers() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    TRACING.pin(provider)
    try:
        old = [("traceparent", b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"), ("k", b"v")]
        with TRACING.producer_span("kafka", "out", old) as headers:
            TRACING.published(3, 42)
    finally:
        TRACING.unpin()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.PRODUCER and span.name == "publish out"
    # no span was current: the context the headers carried is the parent (a dead letter's)
    assert span.parent is not None and span.parent.span_id == int("2" * 16, 16)
    assert span.attributes is not None
    assert span.attributes["messaging.destination.partition.id"] == "3"
    assert span.attributes["messaging.kafka.offset"] == 42
    assert span.context is not None
    flags = int(span.context.trace_flags)
    traceparent = f"00-{span.context.trace_id:032x}-{span.context.span_id:016x}-{flags:02x}"
    assert headers == [("k", b"v"), ("traceparent", traceparent.encode())]


# -- the process as a whole, in subprocesses (the global provider is set once) ----------

SCRIPT = textwrap.dedent(
    """
    import json, os, sys, threading

    if os.environ.get("BLOCK_OPENTELEMETRY"):  # as if eventflow[otel] were not installed
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Blocker())
    if os.environ.get("USER_PROVIDER"):  # the user's own provider, set before eventflow runs
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

    from eventflow import flow, task
    from eventflow._tracing import TRACING

    @task
    def one() -> int:
        return 1

    @flow(name="probe")
    def probe() -> int:
        return one() + 1

    assert probe() == 2
    import re
    report = {
        "on": TRACING.on,
        "modules": sorted(m for m in sys.modules if m.startswith("opentelemetry")),
        "threads": sorted(re.sub(r"[0-9_]+", "", t.name) for t in threading.enumerate()),
    }
    if TRACING.on:
        from opentelemetry import trace
        provider = trace.get_tracer_provider()
        report["provider"] = type(provider).__name__
        resource = getattr(provider, "resource", None)
        report["service"] = resource.attributes.get("service.name") if resource else None
        report["processors"] = [
            type(p).__name__ for p in provider._active_span_processor._span_processors
        ]
    if os.environ.get("USER_PROVIDER"):
        report["user_spans"] = sorted(s.name for s in exporter.get_finished_spans())
    print(json.dumps(report))
    """
)


def probe(tmp_path: Path, **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env={**clean, "EVENTFLOW_DATABASE_URL": f"sqlite:///{tmp_path}/runs.db", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_without_opentelemetry_nothing_is_imported_and_no_thread_starts(tmp_path: Path) -> None:
    blocked = probe(tmp_path, BLOCK_OPENTELEMETRY="1")
    installed = probe(tmp_path)  # installed, nothing configured
    asked_but_missing = probe(
        tmp_path, BLOCK_OPENTELEMETRY="1", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1"
    )
    for report in (blocked, installed, asked_but_missing):
        assert report["on"] is False
        assert report["modules"] == []
        assert report["threads"] == blocked["threads"]


def test_otel_variables_set_up_a_batching_sdk_provider(tmp_path: Path) -> None:
    report = probe(
        tmp_path,
        OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1",  # nothing listens: export fails quietly
        OTEL_BSP_EXPORT_TIMEOUT="100",
    )
    assert report["on"] is True
    assert report["provider"] == "TracerProvider"
    assert report["service"] == "eventflow"  # OTEL_SERVICE_NAME unset
    assert report["processors"] == ["BatchSpanProcessor"]
    named = probe(
        tmp_path, OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1", OTEL_SERVICE_NAME="orders"
    )
    assert named["service"] == "orders"


def test_the_users_provider_wins_over_the_otel_variables(tmp_path: Path) -> None:
    report = probe(tmp_path, USER_PROVIDER="1", OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:1")
    assert report["on"] is True
    assert report["processors"] == ["SimpleSpanProcessor"]  # the user's, nothing added
    assert report["user_spans"] == ["flow probe", "task one"]


async def test_a_batch_run_is_a_consumer_span_linked_to_each_events_context() -> None:
    @flow(name="traced-batch")
    async def total(values: list[dict[str, int]]) -> int:
        return sum(v["n"] for v in values)

    source = KafkaSource("readings", bootstrap_servers="127.0.0.1:1", group_id="readings")
    app = App()
    app.subscribe(source, total, batch_size=3, batch_timeout=5.0)
    parents = [f"00-{PARENT_TRACE[:-1]}{i}-{PARENT_SPAN[:-1]}{i}-01" for i in range(3)]
    async with TestApp(app, trace=True) as test:
        pending = [
            test.send(source, {"n": i}, headers={"traceparent": parent})
            for i, parent in enumerate(parents)
        ]
        for run in pending:
            await run
        (span,) = [s for s in test.spans() if s.name == "flow traced-batch"]
    assert span.kind is SpanKind.CONSUMER and span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3
    assert span.attributes["messaging.system"] == "kafka"
    linked = [
        f"00-{link.context.trace_id:032x}-{link.context.span_id:016x}-01" for link in span.links
    ]
    assert linked == parents
