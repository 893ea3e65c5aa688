"""Publishing from flows exactly once while the worker is SIGKILLed: real processes,
broker and stores; the output topic read with read_committed."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from eventflow._store import _schema as schema
from tests._kafka import Kafka, consume_to_end, create_topic, produce, wait_until
from tests._store import flow_runs, rows
from tests.runtime._workers import Worker, delivery_report
from tests.runtime.test_kafka_crashes import _at_least, new_topic, worker_env
from tests.runtime.test_kafka_delivery import orders
from tests.runtime.test_publish import assert_exactly_once_in_key_order, published

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(300)]

APP = "tests/apps/publish_worker.py:app"


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


async def _settled(url: str, total: int) -> bool:
    """Every event has a final run (COMPLETED or FAILED), none in flight, and the outbox
    is empty of waiting messages."""
    report = await delivery_report(url)
    states = report["states"]
    finished = {
        (r["event_partition"], r["event_offset"])
        for r in await flow_runs(url)
        if r["state_type"] in ("COMPLETED", "FAILED")
    }
    if len(finished) < total or states["RUNNING"] or states["PENDING"] or states["RETRYING"]:
        return False
    return all(r["published_at"] is not None for r in await rows(url, schema.outbox))


@pytest.mark.slow(110)
async def test_sigkill_three_times_publishes_each_completed_event_once_in_key_order(
    kafka: Kafka, database_url: str, tmp_path: Path
) -> None:
    topic, group = await new_topic(kafka, partitions=6)
    out_topic = f"{topic}.out"
    await create_topic(kafka.bootstrap, out_topic, 6)
    total, fail_every = 5000, 50
    await produce(kafka.bootstrap, topic, orders(total, keys=100))
    env = worker_env(
        kafka, database_url, topic, group,
        OUT_TOPIC=out_topic, WORK_SECONDS="0.02", FAIL_EVERY=str(fail_every),
        MAX_IN_FLIGHT="200",
    )  # fmt: skip

    for kill_after in (700, 2000, 3300):
        worker = Worker(env, tmp_path / "worker.log", app=APP)
        await wait_until(
            lambda n=kill_after: _at_least(database_url, n), timeout=120, interval=0.05
        )
        worker.kill()
    worker = Worker(env, tmp_path / "worker.log", app=APP)
    await wait_until(lambda: _settled(database_url, total), timeout=150, interval=0.5)
    assert worker.terminate() == 0

    report = await delivery_report(database_url)
    assert report["duplicates"] == []
    assert report["states"]["CRASHED"] > 0, report  # the kills caught runs in flight
    runs = await flow_runs(database_url)
    completed = {
        orjson.loads(r["event_payload"])["id"] for r in runs if r["state_type"] == "COMPLETED"
    }
    assert len(completed) == total - total // fail_every
    expected = {(i, 0) for i in completed} | {(i, 1) for i in completed if int(i[1:]) % 2 == 0}
    messages = published(await consume_to_end(kafka.bootstrap, out_topic))
    assert_exactly_once_in_key_order(messages, expected)


@pytest.mark.slow(120)
async def test_a_chained_pipeline_runs_each_order_once_in_both_flows_through_kills(
    kafka: Kafka, database_url: str, tmp_path: Path
) -> None:
    """orders -> flow A (publishes) -> orders.validated -> flow B; both workers SIGKILLed."""
    topic, group = await new_topic(kafka, partitions=4)
    validated = f"{topic}.validated"
    await create_topic(kafka.bootstrap, validated, 4)
    total = 2000
    await produce(kafka.bootstrap, topic, orders(total, keys=50))
    env_a = worker_env(kafka, database_url, topic, group, OUT_TOPIC=validated,
                       WORK_SECONDS="0.02", MAX_IN_FLIGHT="100")  # fmt: skip
    env_b = worker_env(kafka, database_url, validated, f"{group}-b", WORK_SECONDS="0.02",
                       MAX_IN_FLIGHT="100")  # fmt: skip
    expected = total + total // 2  # A publishes two messages for even orders

    async def b_completed(n: int) -> bool:
        return len(await _b_runs(database_url)) >= n

    a = Worker(env_a, tmp_path / "a.log", app=APP)
    b = Worker(env_b, tmp_path / "b.log")
    for kill_after in (400, 1100, 1800):
        await wait_until(lambda n=kill_after: b_completed(n), timeout=120, interval=0.05)
        (a if kill_after == 1100 else b).kill()
        a = a if a.alive() else Worker(env_a, tmp_path / "a.log", app=APP)
        b = b if b.alive() else Worker(env_b, tmp_path / "b.log")
    await wait_until(lambda: b_completed(expected), timeout=150, interval=0.5)
    assert a.terminate() == 0 and b.terminate() == 0

    runs = await _b_runs(database_url)
    per_message = Counter((r["id"], r["n"]) for r in runs)
    assert len(per_message) == expected
    assert [m for m, count in per_message.items() if count > 1] == []
    positions = Counter(
        (r["event_source"], r["event_partition"], r["event_offset"])
        for r in await flow_runs(database_url, state_type="COMPLETED")
    )
    assert len(positions) == total + expected  # A's events and B's, each one COMPLETED run
    assert [p for p, count in positions.items() if count > 1] == []


async def _b_runs(url: str) -> list[dict[str, Any]]:
    """Flow B's COMPLETED runs, as the messages A published that they ran."""
    try:
        runs = await flow_runs(url, state_type="COMPLETED")
    except Exception:  # the store is being created
        return []
    return [orjson.loads(r["event_payload"]) for r in runs if r["flow_name"] == "worker-orders"]


@pytest.mark.slow(140)
async def test_a_broker_outage_of_a_minute_keeps_the_messages_and_publishes_them_once(
    tmp_path: Path, sqlite_url: str
) -> None:
    broker = Kafka.start_new()  # its own broker: the others keep theirs
    try:
        topic, group = await new_topic(broker, partitions=4)
        out_topic = f"{topic}.out"
        await create_topic(broker.bootstrap, out_topic, 4)
        total = 2000
        await produce(broker.bootstrap, topic, orders(total, keys=50))
        env = worker_env(broker, sqlite_url, topic, group, OUT_TOPIC=out_topic,
                         WORK_SECONDS="0.2", MAX_IN_FLIGHT="200")  # fmt: skip
        worker = Worker(env, tmp_path / "worker.log", app=APP)
        await wait_until(lambda: _at_least(sqlite_url, 300), timeout=120)
        await asyncio.to_thread(broker.stop)
        down_at = await _completed_count(sqlite_url)

        async def waiting() -> bool:  # runs complete meanwhile; their messages wait
            pending = [r for r in await rows(sqlite_url, schema.outbox) if not r["published_at"]]
            return await _completed_count(sqlite_url) > down_at and len(pending) > 0

        await wait_until(waiting, timeout=30, interval=0.2)
        await asyncio.sleep(60)  # the outage itself, not a synchronisation
        assert worker.alive()
        await asyncio.to_thread(broker.start)
        await wait_until(lambda: _settled(sqlite_url, total), timeout=120, interval=0.5)
        assert worker.terminate() == 0
        messages = published(await consume_to_end(broker.bootstrap, out_topic))
    finally:
        await asyncio.to_thread(broker.stop)
    log = (tmp_path / "worker.log").read_text()
    assert f"kafka:{out_topic}: cannot publish" in log
    assert f"kafka:{out_topic}: publishing again" in log
    runs = await flow_runs(sqlite_url, state_type="COMPLETED")
    ids = {orjson.loads(r["event_payload"])["id"] for r in runs}
    assert len(ids) == total
    expected = {(i, 0) for i in ids} | {(i, 1) for i in ids if int(i[1:]) % 2 == 0}
    assert_exactly_once_in_key_order(messages, expected)


async def _completed_count(url: str) -> int:
    return len(await flow_runs(url, state_type="COMPLETED"))
