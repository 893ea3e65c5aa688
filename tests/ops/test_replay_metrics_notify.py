"""Replay, live source status, metrics and failure notifications of a running worker.

A real broker, real stores, a real HTTP scrape of `/metrics` and a real webhook
receiver on loopback.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
import pydantic
import pytest
from prometheus_client.parser import text_string_to_metric_families

from connectors.kafka import KafkaSource
from eventflow import App, Settings, WebhookNotifier, flow
from eventflow._store import _schema as schema
from eventflow._store._engine import make_engine
from eventflow._store._reader import RunNotFoundError
from eventflow._store._replay import ReplayError, ReplayFilter, request_replay, request_retry
from tests._kafka import Kafka, create_topic, free_port_pair, produce, wait_until
from tests._receiver import receiving
from tests._store import flow_runs, rows

pytestmark = pytest.mark.kafka

OUTAGE = {"on": True}


class Payment(pydantic.BaseModel):
    id: str
    flaky: bool = False


@flow(name="payments")
async def take_payment(payment: Payment) -> str:
    if payment.flaky and OUTAGE["on"]:
        raise ConnectionError("payment provider unavailable")
    return payment.id


@flow(name="payments-watched")
async def take_payment_watched(payment: Payment) -> str:
    """The same flow under a name of its own: this process's metrics are cumulative."""
    return await take_payment.fn(payment)


def settings(url: str, metrics_port: int = 0) -> Settings:
    return Settings(
        database_url=url,
        flush_interval=0.02,
        commit_interval=0.2,
        worker_lease=3,
        metrics_port=metrics_port,
    )


async def serving(app: App) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task_ = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    return stop, task_


async def payments_topic(kafka: Kafka, count: int, flaky_every: int) -> str:
    topic = f"payments-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    await produce(
        kafka.bootstrap,
        topic,
        [
            (f"k{i % 4}", orjson.dumps({"id": f"p{i}", "flaky": i % flaky_every == 0}))
            for i in range(count)
        ],
    )
    return topic


async def test_failed_runs_replay_once_each_linked_to_the_original(
    kafka: Kafka, database_url: str
) -> None:
    OUTAGE["on"] = True
    topic = await payments_topic(kafka, 40, flaky_every=8)  # p0, p8, ... p32 fail
    app = App(settings(database_url))
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=f"g-{topic}"),
        take_payment,
        on_failure="skip",
    )
    stop, serve = await serving(app)
    engine = make_engine(database_url)
    try:
        await wait_until(lambda: _count(database_url, "COMPLETED", 35), 60)
        failed = await flow_runs(database_url, state_type="FAILED")
        assert len(failed) == 5

        completed = await flow_runs(database_url, state_type="COMPLETED")
        with pytest.raises(ReplayError):
            await request_retry(engine, completed[0]["id"])
        with pytest.raises(RunNotFoundError):
            await request_retry(engine, "0" * 32)

        OUTAGE["on"] = False
        single = await request_retry(engine, failed[0]["id"])
        rest = await request_replay(engine, ReplayFilter(flow_name="payments"))
        assert len(rest) == 4  # the one already asked for is not asked again
        assert single not in rest
        assert await request_replay(engine, ReplayFilter(flow_name="payments")) == []

        await wait_until(lambda: _count(database_url, "COMPLETED", 40), 30)
        replays = [r for r in await flow_runs(database_url) if r["retry_of"] is not None]
        assert sorted(r["retry_of"] for r in replays) == sorted(r["id"] for r in failed)
        assert {r["state_type"] for r in replays} == {"COMPLETED"}
        assert {r["worker_id"] for r in replays} == {app.worker_id}
        by_id = {r["id"]: r for r in failed}
        for replay in replays:
            original = by_id[replay["retry_of"]]
            assert (replay["event_partition"], replay["event_offset"]) == (
                original["event_partition"],
                original["event_offset"],
            )
            assert replay["event_payload"] == original["event_payload"]

        status = await wait_until(
            lambda: _status_with(database_url, app.worker_id or "", received=40), 15
        )
        assert status["subscription"] == f"kafka:{topic}->payments"
        assert (status["completed"], status["failed"]) == (35, 5)
    finally:
        stop.set()
        await serve
        await engine.dispose()


async def test_metrics_and_webhook_notifications_of_a_running_worker(
    kafka: Kafka, sqlite_url: str
) -> None:
    OUTAGE["on"] = True
    topic = await payments_topic(kafka, 30, flaky_every=10)  # p0, p10, p20 fail
    await produce(kafka.bootstrap, topic, [("bad", b"{not json")])
    port = free_port_pair()
    with receiving(fail_first=1) as receiver:
        notifier = WebhookNotifier(receiver.url, backoff=0.05)
        app = App(settings(sqlite_url, metrics_port=port), notifiers=[notifier])
        app.subscribe(
            KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=f"g-{topic}"),
            take_payment_watched,
            on_failure="skip",
        )
        stop, serve = await serving(app)
        try:
            await wait_until(lambda: len(receiver.bodies) >= 4, 60)
            samples = await wait_until(lambda: _scrape_when(port, "payments-watched", 31), 15)
        finally:
            stop.set()
            await serve
    assert receiver.attempts == 5  # the first answer was a 503: retried
    texts = sorted(b["text"] for b in receiver.bodies)
    assert sum("payments-watched" in t and "Failed" in t for t in texts) == 4
    assert sorted(b["eventflow"]["event_key"] for b in receiver.bodies) == [
        "bad",
        "k0",
        "k0",
        "k2",
    ]

    flow_runs_total = {
        s.labels["state"]: s.value
        for s in samples
        if s.name == "eventflow_flow_runs_total" and s.labels["flow"] == "payments-watched"
    }
    assert flow_runs_total == {"COMPLETED": 27.0, "FAILED": 4.0}
    subscription = f"kafka:{topic}->payments-watched"
    by_name = {
        s.name: s.value
        for s in samples
        if s.labels.get("subscription") == subscription
        and s.name.startswith(("eventflow_events_", "eventflow_runs_in_flight"))
    }
    assert by_name["eventflow_events_received_total"] == 31
    assert by_name["eventflow_events_invalid_total"] == 1
    assert by_name["eventflow_events_decoded_total"] == 30
    assert by_name["eventflow_runs_in_flight"] == 0
    duration_count = [
        s.value
        for s in samples
        if s.name == "eventflow_flow_run_duration_seconds_count"
        and s.labels["flow"] == "payments-watched"
    ]
    assert duration_count == [30.0]  # the invalid event never started
    buckets = [
        s
        for s in samples
        if s.name == "eventflow_flow_run_duration_seconds_bucket"
        and s.labels["flow"] == "payments-watched"
    ]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 30.0
    assert [b.value for b in buckets] == sorted(b.value for b in buckets)  # cumulative
    store_batches = [s for s in samples if s.name == "eventflow_store_batch_records_count"]
    assert store_batches and store_batches[0].value > 0


async def _count(url: str, state: str, expected: int) -> bool:
    return len(await flow_runs(url, state_type=state)) >= expected


async def _status_with(url: str, worker_id: str, received: int) -> dict[str, object] | None:
    found = await rows(url, schema.source_status, schema.source_status.c.worker_id == worker_id)
    if found and found[0]["received"] >= received:
        return found[0]
    return None


async def _scrape_when(port: int, flow_name: str, total: float) -> list[Any] | None:
    """The samples of `/metrics` once `flow_name` has `total` finished runs there."""
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics", timeout=5)).text
    samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    finished = sum(
        s.value
        for s in samples
        if s.name == "eventflow_flow_runs_total" and s.labels["flow"] == flow_name
    )
    if finished >= total:
        return samples
    return None
