"""Traces in a real Jaeger: an order's trace runs from its producer through the flow
run, its task runs (with their retries) and the message the flow publishes; a
failed run shows its exception; a crash and a resume stay in the trace.

Workers are `eventflow run` processes configured only by the OTEL_* variables;
the "order service" producing the orders is this test, with a TracerProvider
of its own exporting to the same Jaeger.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import propagate
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind

from eventflow._store import _schema as schema
from tests._jaeger import Jaeger, JaegerTrace
from tests._kafka import Kafka, consume_all, create_topic, wait_until
from tests._store import flow_runs, rows
from tests.runtime._workers import Worker

pytestmark = pytest.mark.kafka

APP = "tests/apps/traced_worker.py:app"


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    server = Jaeger.start_new()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


@pytest.fixture(scope="module")
def order_service(jaeger: Jaeger) -> Iterator[TracerProvider]:
    """The upstream service: its spans go to Jaeger as soon as they end."""
    provider = TracerProvider(resource=Resource.create({"service.name": "order-service"}))
    exporter = OTLPSpanExporter(endpoint=f"{jaeger.otlp_endpoint}/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider
    finally:
        provider.shutdown()


async def publish_traced(
    provider: TracerProvider, bootstrap: str, topic: str, order: dict[str, object]
) -> tuple[str, str]:
    """Publish `order` inside a PRODUCER span, its context in the headers; the
    trace id and the producer span's id."""
    tracer = provider.get_tracer("order-service")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        with tracer.start_as_current_span(f"publish {topic}", kind=SpanKind.PRODUCER) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            headers = [(k, v.encode()) for k, v in carrier.items()]
            await producer.send_and_wait(
                topic, json.dumps(order).encode(), key=str(order["id"]).encode(), headers=headers
            )
            context = span.get_span_context()
    finally:
        await producer.stop()
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def worker_env(kafka: Kafka, jaeger: Jaeger, url: str, **extra: str) -> dict[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return {
        "EVENTFLOW_DATABASE_URL": url,
        "EVENTFLOW_WORKER_LEASE": "3",
        "EVENTFLOW_COMMIT_INTERVAL": "0.2",
        "EVENTFLOW_LOG_FORMAT": "json",
        "BOOTSTRAP": kafka.bootstrap,
        "TOPIC": f"orders-{suffix}",
        "OUTPUT_TOPIC": f"shipped-{suffix}",
        "GROUP": f"g-{suffix}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_endpoint,
        "OTEL_SERVICE_NAME": "eventflow-worker",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **extra,
    }


def tag_of(trace: JaegerTrace, span_name: str, key: str) -> object:
    return trace.one(span_name).tags.get(key)


@pytest.mark.slow(30)
async def test_one_trace_from_the_producer_through_the_run_to_the_published_message(
    kafka: Kafka, jaeger: Jaeger, order_service: TracerProvider, sqlite_url: str, tmp_path: Path
) -> None:
    env = worker_env(kafka, jaeger, sqlite_url)
    topic, output = env["TOPIC"], env["OUTPUT_TOPIC"]
    await create_topic(kafka.bootstrap, topic, 1)
    await create_topic(kafka.bootstrap, output, 1)
    trace_id, producer_span_id = await publish_traced(
        order_service, kafka.bootstrap, topic, {"id": "o1", "amount": 40}
    )
    failing_trace_id, _ = await publish_traced(
        order_service, kafka.bootstrap, topic, {"id": "o2", "amount": -5}
    )
    worker = Worker(env, tmp_path / "worker.log", app=APP)

    async def both_ended() -> bool:
        try:
            runs = await flow_runs(sqlite_url)
        except Exception:  # the worker has not created the store yet
            return False
        return {r["state_type"] for r in runs} == {"COMPLETED", "FAILED"}

    await wait_until(both_ended, timeout=90, interval=0.2)
    assert worker.terminate() == 0  # the SDK flushes what it still holds at exit
    shipped = await consume_all(kafka.bootstrap, output, 1, timeout=30)
    assert len(shipped) == 1

    names = ["flow traced-orders", "publish " + topic, "publish " + output]
    names += ["task enrich", "task ship"]
    found = await jaeger.wait_for_trace(
        trace_id, lambda t: all(t.named(n) for n in names), timeout=60
    )
    assert found.names() == sorted(names)  # one trace holds them all, nothing else
    producer = found.one(f"publish {topic}")
    run = found.one("flow traced-orders")
    enrich, ship = found.one("task enrich"), found.one("task ship")
    published = found.one(f"publish {output}")
    assert producer.span_id == producer_span_id and producer.service == "order-service"
    assert run.parent_id == producer.span_id and run.service == "eventflow-worker"
    assert enrich.parent_id == run.span_id and ship.parent_id == run.span_id
    assert published.parent_id == ship.span_id
    # kinds and the messaging conventions
    assert run.tags["span.kind"] == "consumer" and published.tags["span.kind"] == "producer"
    assert run.tags["messaging.system"] == "kafka"
    assert run.tags["messaging.destination.name"] == topic
    assert run.tags["messaging.destination.partition.id"] == "0"
    assert run.tags["messaging.kafka.offset"] == 0
    assert run.tags["messaging.consumer.group.name"] == env["GROUP"]
    assert published.tags["messaging.destination.name"] == output
    assert published.tags["messaging.kafka.message.key"] == "o1"
    # eventflow's ids and final states, as the store has them
    (stored,) = await flow_runs(sqlite_url, event_offset=0)
    assert run.tags["eventflow.flow_run.id"] == stored["id"]
    assert stored["trace_context"].startswith(f"00-{trace_id}-{run.span_id}-")
    assert run.tags["eventflow.state"] == "COMPLETED"
    assert enrich.tags["eventflow.run_count"] == 2 and ship.tags["eventflow.run_count"] == 2
    # each task's retry is an event on its span, with the error of the failed attempt
    (retry,) = [log for log in enrich.logs if log.get("event") == "retry"]
    assert retry["exception.type"] == "ConnectionError"
    assert retry["eventflow.attempt"] == 1
    (retry,) = [log for log in ship.logs if log.get("event") == "retry"]
    assert retry["exception.type"] == "TimeoutError"

    failed = await jaeger.wait_for_trace(
        failing_trace_id,
        lambda t: bool(t.named("flow traced-orders")) and len(t.named("task ship")) == 1,
    )
    run = failed.one("flow traced-orders")
    assert run.tags["error"] is True and run.tags["eventflow.state"] == "FAILED"
    assert run.tags["otel.status_description"] == "ValueError: order o2 has a negative amount"
    exceptions = [log for log in run.logs if log.get("event") == "exception"]
    assert exceptions and exceptions[0]["exception.type"] == "ValueError"
    assert "negative amount" in exceptions[0]["exception.message"]
    assert "Traceback" in exceptions[0]["exception.stacktrace"]
    assert failed.one("task ship").tags["error"] is True
    assert not failed.named(f"publish {output}")  # it published nothing

    # the worker's JSON log lines carry the ids of the span they were written in
    log = (tmp_path / "worker.log").read_text().splitlines()
    lines = [json.loads(line) for line in log if line.startswith("{")]
    (shipped_line,) = [line for line in lines if line.get("message") == "shipped o1"]
    assert shipped_line["trace_id"] == trace_id and shipped_line["span_id"] == ship.span_id


@pytest.mark.slow(40)
async def test_a_crashed_run_resumes_in_the_same_trace_linked_to_it(
    kafka: Kafka, jaeger: Jaeger, order_service: TracerProvider, sqlite_url: str, tmp_path: Path
) -> None:
    gate = tmp_path / "gate"
    gate.touch()
    env = worker_env(kafka, jaeger, sqlite_url, GATE=str(gate))
    topic = env["TOPIC"]
    await create_topic(kafka.bootstrap, topic, 1)
    await create_topic(kafka.bootstrap, env["OUTPUT_TOPIC"], 1)
    trace_id, producer_span_id = await publish_traced(
        order_service, kafka.bootstrap, topic, {"id": "o1", "amount": 40}
    )
    first = Worker(env, tmp_path / "first.log", app=APP)
    # enrich completed (its span exported, its result kept); ship waits at the gate
    seen = await jaeger.wait_for_trace(trace_id, lambda t: bool(t.named("task enrich")))
    crashed_span_id = seen.one("task enrich").parent_id

    async def enrich_kept() -> bool:  # durable in the store: what the resume reuses
        done = await rows(
            sqlite_url, schema.task_runs, schema.task_runs.c.state_type == "COMPLETED"
        )
        return bool(done)

    await wait_until(enrich_kept, timeout=30, interval=0.1)
    (crashed,) = await flow_runs(sqlite_url)
    assert crashed["trace_context"].startswith(f"00-{trace_id}-{crashed_span_id}-")
    first.kill()  # kill -9: the run's own span is never exported
    gate.unlink()

    second = Worker(env, tmp_path / "second.log", app=APP)

    async def resumed() -> list[dict[str, object]]:
        return await flow_runs(sqlite_url, state_type="COMPLETED")

    (done,) = await wait_until(resumed, timeout=90, interval=0.2)
    assert done["resumed_from"] == crashed["id"]
    assert second.terminate() == 0

    found = await jaeger.wait_for_trace(trace_id, lambda t: bool(t.named("flow traced-orders")))
    run = found.one("flow traced-orders")
    assert run.tags["eventflow.flow_run.id"] == done["id"]
    assert run.tags["eventflow.flow_run.resumed_from"] == crashed["id"]
    assert run.parent_id == producer_span_id  # the redelivered message's context
    assert run.links == ((trace_id, crashed_span_id),)  # and the run it resumes
    # the kept enrich result was reused: only ship ran again, under the new run
    (ship,) = found.named("task ship")
    assert ship.parent_id == run.span_id
    (enrich,) = found.named("task enrich")
    assert enrich.parent_id == crashed_span_id
