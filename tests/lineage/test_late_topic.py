"""A topic whose producer stops turns late; the flows two hops downstream are affected.

Real Kafka, real SQLite and PostgreSQL, the real server over HTTP, the real
`eventflow` command, and a real webhook receiver on 127.0.0.1.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from connectors.kafka import KafkaSource
from connectors.schedule import IntervalSchedule
from eventflow import App, WebhookNotifier, flow
from tests._kafka import Kafka, create_topic, wait_until
from tests._receiver import receiving
from tests.lineage._harness import (
    Producer,
    api_lineage,
    cli,
    graph,
    notices,
    producing,
    rounds_later,
    serving,
    settings,
    settled,
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow(60)]

EXPECT = timedelta(seconds=5)
"""Long enough that a loaded machine's stalls do not make a producing topic late."""
DOWNSTREAM = ["lin-ingest", "lin-publish", "lin-summarize"]


@flow(name="lin-ingest", writes=["table:lin.orders"])
async def ingest(id: str) -> str:
    return id


@flow(name="lin-summarize", reads=["table:lin.orders"], writes=["table:lin.daily"])
async def summarize() -> None:
    return None


@flow(name="lin-publish", reads=["table:lin.daily"])
async def publish() -> None:
    return None


def lineage_app(url: str, topic: str, bootstrap: str, hook: str) -> App:
    """The streaming flow, and two batch flows on hourly schedules (that never fire here)."""
    app = App(settings(url), notifiers=[WebhookNotifier(hook, backoff=0.05)])
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=bootstrap, group_id=f"g-{topic}"),
        ingest,
        expect_every=EXPECT,
    )
    app.subscribe(IntervalSchedule(timedelta(hours=1), name=f"sum-{topic}"), summarize)
    app.subscribe(IntervalSchedule(timedelta(hours=1), name=f"pub-{topic}"), publish)
    return app


async def test_a_stopped_producer_makes_the_topic_late_once_and_fresh_once(
    kafka: Kafka, database_url: str
) -> None:
    topic = f"lin-{uuid.uuid4().hex[:8]}"
    dataset = f"kafka:{topic}"
    await create_topic(kafka.bootstrap, topic, partitions=1)
    producer = Producer(kafka.bootstrap, topic)
    producer.on.set()
    with receiving() as receiver:
        app = lineage_app(database_url, topic, kafka.bootstrap, receiver.url)
        async with producing(producer), serving(app):
            [start] = await wait_until(lambda: settled(database_url, dataset, receiver), 60)
            producer.on.clear()

            await wait_until(lambda: notices(receiver, start), 30)
            [late] = notices(receiver, start)
            assert late["state"] == "LATE" and late["dataset"] == dataset
            assert late["affected_flows"] == DOWNSTREAM
            assert late["affected_datasets"] == ["table:lin.daily", "table:lin.orders"]

            stored = await graph(database_url)
            assert stored.datasets[dataset].late_since is not None
            assert REGISTRY.get_sample_value("eventflow_dataset_late", {"dataset": dataset}) == 1
            age = REGISTRY.get_sample_value("eventflow_dataset_age_seconds", {"dataset": dataset})
            assert age is not None and age >= EXPECT.total_seconds()
            body = await api_lineage(database_url)
            [item] = body["late"]
            assert item == {
                "dataset": dataset,
                "affected_flows": DOWNSTREAM,
                "affected_datasets": ["table:lin.daily", "table:lin.orders"],
            }
            states = {d["name"]: d["state"] for d in body["datasets"]}
            assert states[dataset] == "late"
            assert states["table:lin.orders"] == "affected"
            assert states["table:lin.daily"] == "affected"
            flows = {f["name"]: f for f in body["flows"]}
            assert {f["name"] for f in body["flows"] if f["state"] == "affected"} == set(DOWNSTREAM)
            assert flows["lin-summarize"]["reads"] == [
                f"schedule:sum-{topic}",
                "table:lin.orders",
            ]

            late_cli = await cli(database_url, "late", "--json")
            assert late_cli.returncode == 1, late_cli.stderr
            assert json.loads(late_cli.stdout)[0]["affected_flows"] == DOWNSTREAM
            text = await cli(database_url, "late")
            assert text.returncode == 1 and f"LATE {dataset}" in text.stdout
            assert "lin-publish" in text.stdout
            shown = await cli(database_url, "lineage")
            assert shown.returncode == 0 and "AFFECTED" in shown.stdout, shown.stderr

            await rounds_later([app], 5)
            assert len(notices(receiver, start)) == 1  # no repeat per evaluation

            producer.on.set()
            await wait_until(lambda: len(notices(receiver, start)) == 2, 30)
            fresh = notices(receiver, start)[1]
            assert fresh["state"] == "FRESH" and fresh["dataset"] == dataset
            assert fresh["affected_flows"] == DOWNSTREAM
            assert REGISTRY.get_sample_value("eventflow_dataset_late", {"dataset": dataset}) == 0
            await rounds_later([app], 5)
            assert len(notices(receiver, start)) == 2
            assert (await cli(database_url, "late")).returncode == 0


@pytest.mark.slow(90)
async def test_two_workers_and_a_restart_send_one_notice_each_way(
    kafka: Kafka, database_url: str
) -> None:
    topic = f"lin-{uuid.uuid4().hex[:8]}"
    dataset = f"kafka:{topic}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    producer = Producer(kafka.bootstrap, topic)
    producer.on.set()
    with receiving() as receiver:
        first = lineage_app(database_url, topic, kafka.bootstrap, receiver.url)
        second = lineage_app(database_url, topic, kafka.bootstrap, receiver.url)
        async with producing(producer), serving(second):
            async with serving(first):
                [start] = await wait_until(lambda: settled(database_url, dataset, receiver), 60)
                producer.on.clear()
                await wait_until(lambda: notices(receiver, start), 30)
                await rounds_later([first, second], 5)
                assert [n["state"] for n in notices(receiver, start)] == ["LATE"]
            restarted = lineage_app(database_url, topic, kafka.bootstrap, receiver.url)
            async with serving(restarted):
                await rounds_later([restarted, second], 5)
                assert [n["state"] for n in notices(receiver, start)] == ["LATE"]
                producer.on.set()
                await wait_until(lambda: len(notices(receiver, start)) == 2, 30)
                await rounds_later([restarted, second], 5)
                assert [n["state"] for n in notices(receiver, start)] == ["LATE", "FRESH"]
