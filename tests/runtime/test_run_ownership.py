"""Every run is a task of its runner's group: a revoked partition's runs and the runs
left at shutdown are cancelled saying why (stored with them), and no task of a runner
outlives `App.serve` (real broker, real store)."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace

import pytest

from connectors.kafka import KafkaSource
from eventflow import App, Settings, flow
from eventflow._states import REVOKED, SHUT_DOWN
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests._store import flow_runs

pytestmark = pytest.mark.kafka


def settings(url: str) -> Settings:
    return Settings(database_url=url, flush_interval=0.02, commit_interval=0.2)


def runner_tasks(app: App) -> list[asyncio.Task[object]]:
    """The runs (named after their subscription) of `app` still alive."""
    names = {s.name for s in app.subscriptions}
    return [t for t in asyncio.all_tasks() if t.get_name() in names]


def kafka_app(url: str, bootstrap: str, topic: str, group: str, process: object) -> App:
    app = App(replace(settings(url), shutdown_grace=0.3))
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=bootstrap, group_id=group, session_timeout_ms=6000),
        process,  # type: ignore[arg-type]
        revoke_grace_seconds=0.3,
    )
    return app


@pytest.mark.slow(40)
async def test_a_revoked_partitions_runs_are_cancelled_as_revoked_and_none_outlives_serve(
    kafka: Kafka, database_url: str
) -> None:
    topic, group = f"own-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    flow_name = f"owned-{group}"
    hang = {"first": True}
    started: list[int] = []

    @flow(name=flow_name)
    async def process(n: int) -> int:
        started.append(n)
        if hang["first"]:
            await asyncio.Event().wait()  # only the first worker's runs hang
        return n

    first = kafka_app(database_url, kafka.bootstrap, topic, group, process)
    stop_first = asyncio.Event()
    serving_first = asyncio.create_task(first.serve(stop_first))
    await asyncio.wait_for(first.started.wait(), 60)
    await produce(kafka.bootstrap, topic, [(f"k{i}", b'{"n": %d}' % i) for i in range(8)])
    await wait_until(lambda: len(started) == 8, timeout=60)
    assert len(runner_tasks(first)) == 8

    hang["first"] = False
    second = kafka_app(database_url, kafka.bootstrap, topic, group, process)
    stop_second = asyncio.Event()
    serving_second = asyncio.create_task(second.serve(stop_second))
    try:
        # the rebalance revokes the first worker's partitions: its hung runs are
        # cancelled after the grace period, and whoever owns them now runs them again

        async def all_completed() -> bool:
            done = await flow_runs(database_url, flow_name=flow_name, state_type="COMPLETED")
            return len({(r["event_offset"], r["event_partition"]) for r in done}) == 8

        await wait_until(all_completed, timeout=90)
        crashed = await flow_runs(database_url, flow_name=flow_name, state_type="CRASHED")
        assert len(crashed) == 8
        assert {r["error"] for r in crashed} == {f"the flow run was interrupted: {REVOKED}"}
    finally:
        stop_first.set()
        stop_second.set()
        await asyncio.wait_for(asyncio.gather(serving_first, serving_second), 60)
    assert runner_tasks(first) == [] and runner_tasks(second) == []
    assert len(first.runners[0].group.every) == 0


@pytest.mark.slow(20)
async def test_runs_left_at_shutdown_are_cancelled_as_such_and_none_outlives_serve(
    kafka: Kafka, database_url: str
) -> None:
    topic, group = f"own-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    flow_name = f"drained-{group}"
    started: list[int] = []

    @flow(name=flow_name)
    async def hangs(n: int) -> int:
        started.append(n)
        await asyncio.Event().wait()
        return n

    app = kafka_app(database_url, kafka.bootstrap, topic, group, hangs)
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    await produce(kafka.bootstrap, topic, [(f"k{i}", b'{"n": %d}' % i) for i in range(4)])
    await wait_until(lambda: len(started) == 4, timeout=60)
    stop.set()
    await asyncio.wait_for(serving, 60)
    assert runner_tasks(app) == []
    crashed = await flow_runs(database_url, flow_name=flow_name, state_type="CRASHED")
    assert sorted(r["error"] for r in crashed) == [f"the flow run was interrupted: {SHUT_DOWN}"] * 4
