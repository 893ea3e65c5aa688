"""Crashes, rebalances, shutdowns and outages with real worker processes, broker and databases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from eventflow._store import _schema as schema
from tests._kafka import Kafka, create_topic, produce, wait_until
from tests._services import Postgres
from tests._store import rows
from tests.runtime._workers import Worker, completed_count, delivery_report
from tests.runtime.test_kafka_delivery import orders

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


def worker_env(kafka: Kafka, url: str, topic: str, group: str, **extra: str) -> dict[str, str]:
    return {
        "EVENTFLOW_DATABASE_URL": url,
        "EVENTFLOW_WORKER_LEASE": "3",
        "EVENTFLOW_COMMIT_INTERVAL": "0.2",
        "EVENTFLOW_SHUTDOWN_GRACE": "20",
        "BOOTSTRAP": kafka.bootstrap,
        "TOPIC": topic,
        "GROUP": group,
        **extra,
    }


async def new_topic(kafka: Kafka, partitions: int = 4) -> tuple[str, str]:
    topic, group = f"t-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions)
    return topic, group


@pytest.mark.slow(45)
async def test_kill_9_mid_stream_loses_nothing_and_runs_nothing_twice(
    kafka: Kafka, database_url: str, tmp_path: Path
) -> None:
    topic, group = await new_topic(kafka)
    total = 4000
    await produce(kafka.bootstrap, topic, orders(total, keys=100))
    env = worker_env(kafka, database_url, topic, group, WORK_SECONDS="0.1", MAX_IN_FLIGHT="100")

    for kill_after in (400, 1400, 2400):
        worker = Worker(env, tmp_path / "worker.log")
        await wait_until(lambda n=kill_after: _at_least(database_url, n), timeout=120, interval=0.1)
        worker.kill()
    worker = Worker(env, tmp_path / "worker.log")
    await wait_until(lambda: _at_least(database_url, total), timeout=180, interval=0.5)
    # the dead workers' runs are marked CRASHED once their lease lapses
    await wait_until(lambda: _no_active_runs(database_url), timeout=60, interval=0.5)
    assert worker.terminate() == 0

    report = await delivery_report(database_url)
    assert report["completed_positions"] == total
    assert report["duplicates"] == []
    assert report["states"]["CRASHED"] > 0, report
    assert set(report["states"]) <= {"COMPLETED", "CRASHED"}


@pytest.mark.slow(15)
async def test_a_second_worker_takes_over_when_the_first_dies(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    topic, group = await new_topic(kafka)
    total = 3000
    env = worker_env(
        kafka,
        sqlite_url,
        topic,
        group,
        WORK_SECONDS="0.1",
        MAX_IN_FLIGHT="50",
        SESSION_TIMEOUT_MS="6000",
    )
    first = Worker(env, tmp_path / "first.log")
    second = Worker(env, tmp_path / "second.log")
    await produce(kafka.bootstrap, topic, orders(total, keys=100))

    async def both_working() -> bool:
        try:
            return len({r["worker_id"] for r in await rows(sqlite_url, schema.flow_runs)}) >= 2
        except Exception:  # the workers may not have created the schema yet
            return False

    await wait_until(both_working, timeout=120, interval=0.2)
    first.kill()
    await wait_until(lambda: _at_least(sqlite_url, total), timeout=180, interval=0.5)
    assert second.alive()
    assert second.terminate() == 0

    report = await delivery_report(sqlite_url)
    assert report["completed_positions"] == total
    assert report["duplicates"] == []


async def test_workers_option_shares_one_group_between_processes(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    topic, group = await new_topic(kafka)
    total = 2000
    env = worker_env(kafka, sqlite_url, topic, group, WORK_SECONDS="0.1", MAX_IN_FLIGHT="20")
    supervisor = Worker(env, tmp_path / "workers.log", "--workers", "2")

    async def both_started() -> bool:
        try:
            return len(await rows(sqlite_url, schema.workers)) == 2
        except Exception:  # the schema may not exist yet
            return False

    # on a busy machine one worker can start seconds after the other: the events come
    # once both are up, and take one worker alone ~10 s, so the group shares them
    await wait_until(both_started, timeout=120, interval=0.2)
    await produce(kafka.bootstrap, topic, orders(total, keys=100))
    await wait_until(lambda: _at_least(sqlite_url, total), timeout=180, interval=0.5)
    assert supervisor.terminate() == 0  # SIGTERM reaches both workers, both stop cleanly

    report = await delivery_report(sqlite_url)
    assert report["completed_positions"] == total and report["duplicates"] == []
    workers = await rows(sqlite_url, schema.workers)
    assert len(workers) == 2 and all(w["stopped_at"] is not None for w in workers)
    assert len({r["worker_id"] for r in await rows(sqlite_url, schema.flow_runs)}) == 2


async def test_sigterm_drains_commits_and_crashes_nothing(
    kafka: Kafka, database_url: str, tmp_path: Path
) -> None:
    topic, group = await new_topic(kafka, partitions=2)
    total = 2000
    await produce(kafka.bootstrap, topic, orders(total, keys=50))
    env = worker_env(kafka, database_url, topic, group, WORK_SECONDS="0.05", MAX_IN_FLIGHT="100")
    worker = Worker(env, tmp_path / "worker.log")
    await wait_until(lambda: _at_least(database_url, 300), timeout=120)
    assert worker.terminate() == 0

    report = await delivery_report(database_url)
    assert report["states"]["CRASHED"] == 0 and report["duplicates"] == []
    assert set(report["states"]) == {"COMPLETED"}  # everything in flight finished
    stored = {
        (o["topic"], o["partition"]): o["next_offset"]
        for o in await rows(database_url, schema.consumer_offsets)
    }
    completed = await rows(database_url, schema.flow_runs)
    for partition in (0, 1):
        done = sorted(r["event_offset"] for r in completed if r["event_partition"] == partition)
        assert done == list(range(len(done)))  # a contiguous prefix
        assert stored[(topic, partition)] == len(done)  # committed exactly up to it
    assert await _kafka_committed(kafka, topic, group, 2) == {p: stored[(topic, p)] for p in (0, 1)}

    # the next worker starts where the first stopped
    worker = Worker(env, tmp_path / "worker.log")
    await wait_until(lambda: _at_least(database_url, total), timeout=120, interval=0.5)
    assert worker.terminate() == 0
    report = await delivery_report(database_url)
    assert report["completed_positions"] == total and report["duplicates"] == []


async def test_broker_restart_mid_stream(tmp_path: Path, sqlite_url: str) -> None:
    broker = Kafka.start_new()  # its own broker: the others keep theirs
    try:
        topic, group = await new_topic(broker, partitions=2)
        total = 2000
        await produce(broker.bootstrap, topic, orders(total, keys=50))
        env = worker_env(broker, sqlite_url, topic, group, WORK_SECONDS="0.05", MAX_IN_FLIGHT="50")
        worker = Worker(env, tmp_path / "worker.log")
        await wait_until(lambda: _at_least(sqlite_url, 300), timeout=120)
        await asyncio.to_thread(broker.stop)
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: _at_least(sqlite_url, total), timeout=180, interval=0.5)
        assert worker.terminate() == 0
    finally:
        await asyncio.to_thread(broker.stop)
    report = await delivery_report(sqlite_url)
    assert report["completed_positions"] == total and report["duplicates"] == []


@pytest.mark.postgres
async def test_postgres_restart_mid_stream(kafka: Kafka, tmp_path: Path) -> None:
    server = Postgres.start_new()  # its own server: the others keep theirs
    try:
        url = server.url()
        topic, group = await new_topic(kafka, partitions=2)
        total = 2000
        await produce(kafka.bootstrap, topic, orders(total, keys=50))
        env = worker_env(kafka, url, topic, group, WORK_SECONDS="0.05", MAX_IN_FLIGHT="50")
        worker = Worker(env, tmp_path / "worker.log")
        await wait_until(lambda: _at_least(url, 300), timeout=120)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(3)  # an outage, not a synchronisation: the worker must ride it out
        assert worker.alive()
        await asyncio.to_thread(server.start)
        await wait_until(lambda: _at_least(url, total), timeout=180, interval=0.5)
        assert worker.terminate() == 0
        report = await delivery_report(url)
        assert report["completed_positions"] == total and report["duplicates"] == []
    finally:
        await asyncio.to_thread(server.stop)


async def _at_least(url: str, count: int) -> bool:
    try:
        return await completed_count(url) >= count
    except Exception:  # the database may be restarting
        return False


async def _no_active_runs(url: str) -> bool:
    report = await delivery_report(url)
    states = report["states"]
    return not (states["RUNNING"] or states["RETRYING"] or states["PENDING"])


async def _kafka_committed(kafka: Kafka, topic: str, group: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {p: await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)}
    finally:
        await consumer.stop()
