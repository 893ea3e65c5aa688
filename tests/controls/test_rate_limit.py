"""`rate_limit` (global and per key): runs wait for tokens, none dropped, the consumer pauses."""

from __future__ import annotations

import time

import pydantic
import pytest
from prometheus_client import REGISTRY

from connectors.kafka import KafkaSource
from eventflow import App, flow
from eventflow.testing import TestApp
from tests._kafka import Kafka, wait_until
from tests._store import flow_runs
from tests.controls._harness import (
    committed,
    memory_topic,
    new_topic,
    send,
    send_all,
    serving,
    settings,
)


class Ping(pydantic.BaseModel):
    id: str
    customer_id: str = "c"


@pytest.mark.kafka  # the Kafka consumer pausing at the bound
async def test_global_rate_limit_spaces_runs_and_pauses_the_consumer(
    kafka: Kafka, database_url: str
) -> None:
    topic, group = await new_topic(kafka, "rate")
    starts: list[float] = []

    @flow(name="rate-pings")
    async def handle(ping: Ping) -> str:
        starts.append(time.monotonic())
        return ping.id

    await send(kafka, topic, [{"id": f"p{i}"} for i in range(12)])
    app = App(settings(database_url))
    subscription = app.subscribe(
        KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=group, max_batch=2),
        handle,
        rate_limit="2/s",
        max_in_flight=4,
    )
    most_in_flight, paused_seen = 0, False

    async with serving(app):
        runner = app.runners[0]
        partitions = [(topic, 0)]

        def sample() -> bool:
            nonlocal most_in_flight, paused_seen
            most_in_flight = max(most_in_flight, runner.in_flight)
            if runner.stats.waiting["rate_limit"] and runner.paused(partitions) == {(topic, 0)}:
                paused_seen = True
            return runner.stats.completed == 12

        async def throttled_runs_are_pending() -> bool:
            await runner.writer.flush()
            pending = await flow_runs(database_url, state_type="PENDING")
            return any(r["state_name"] == "Throttled" for r in pending)

        await wait_until(throttled_runs_are_pending, timeout=30)
        await wait_until(sample, timeout=60, interval=0.02)
    runs = await flow_runs(database_url)
    assert sorted(r["state_type"] for r in runs) == ["COMPLETED"] * 12  # none dropped
    assert await committed(database_url, group) == 12
    assert runner.stats.decisions == {
        ("rate_limit", "admitted"): 2,
        ("rate_limit", "throttled"): 10,
    }
    # a burst of 2, then one start per 0.5 s
    for k in range(2, 12):
        assert starts[k] - starts[0] >= (k - 1) * 0.5 - 0.05, (k, starts[k] - starts[0])
    assert starts[11] - starts[0] < 10
    # waiting events count as in flight: the consumer paused at the bound (+ one fetch)
    assert paused_seen
    assert most_in_flight <= 4 + 1
    labels = {"subscription": subscription.name, "control": "rate_limit"}
    assert (
        REGISTRY.get_sample_value(
            "eventflow_control_decisions_total", {**labels, "decision": "throttled"}
        )
        == 10
    )
    assert REGISTRY.get_sample_value("eventflow_events_waiting", labels) == 0


async def test_rate_limit_per_key_throttles_only_the_busy_key(database_url: str) -> None:
    source, group = memory_topic("ratekey")
    started: list[str] = []

    @flow(name="ratekey-pings")
    async def handle(ping: Ping) -> str:
        started.append(ping.id)
        return ping.id

    documents = [{"id": f"a{i}", "customer_id": "a"} for i in range(5)]
    documents += [{"id": f"b{i}", "customer_id": "b"} for i in range(2)]
    app = App(settings(database_url))
    app.subscribe(source, handle, rate_limit="2/s", rate_limit_key="customer_id")
    async with TestApp(app, database_url=database_url) as test:
        send_all(test, source, documents)
        runner = test.worker.runners[0]
        await wait_until(lambda: {"b0", "b1"} <= set(started), timeout=60, interval=0.02)
        assert runner.stats.waiting["rate_limit"] >= 1  # a's runs still wait for tokens
        await wait_until(lambda: runner.stats.completed == 7, timeout=60)
    assert started[:2] == ["a0", "a1"] and started[-3:] == ["a2", "a3", "a4"]
    assert runner.stats.decisions == {("rate_limit", "admitted"): 4, ("rate_limit", "throttled"): 3}
    assert await committed(database_url, group) == 7
