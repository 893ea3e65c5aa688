"""Publishing from flows exactly once while the worker is SIGKILLed: real processes,
broker and stores; the output topic read with read_committed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

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
