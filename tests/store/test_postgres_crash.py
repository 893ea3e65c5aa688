"""PostgreSQL killed with SIGKILL mid-stream: the worker rides it out, nothing is lost or run twice.

The writer's batches are in flight when the server dies: some committed without
the writer hearing of it (it writes them again: a plain insert meets the rows
already there and the batch is rewritten as upserts), some lost with the crash
(their offsets with them, so their events run again). Offsets are stored in the
transaction of the runs before them, so whatever survives the crash agrees.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._kafka import Kafka, produce, wait_until
from tests._services import Postgres
from tests.runtime._workers import Worker, completed_count, delivery_report
from tests.runtime.test_kafka_crashes import new_topic, worker_env
from tests.runtime.test_kafka_delivery import orders

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.timeout(400)]


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


async def _at_least(url: str, count: int) -> bool:
    try:
        return await completed_count(url) >= count
    except Exception:  # the server is down or recovering
        return False


@pytest.mark.slow(17)
async def test_postgres_killed_mid_stream_loses_nothing_and_completes_nothing_twice(
    kafka: Kafka, tmp_path: Path
) -> None:
    server = Postgres.start_new()  # its own server: the session's keeps running
    try:
        url = server.url()
        topic, group = await new_topic(kafka, partitions=4)
        total = 6000
        await produce(kafka.bootstrap, topic, orders(total, keys=100))
        env = worker_env(kafka, url, topic, group, WORK_SECONDS="0.001", MAX_IN_FLIGHT="500")
        worker = Worker(env, tmp_path / "worker.log")
        for kill_after in (1000, 3000):
            await wait_until(lambda n=kill_after: _at_least(url, n), timeout=120, interval=0.05)
            await asyncio.to_thread(server.kill)  # SIGKILL, postmaster and backends
            assert worker.alive()
            await asyncio.to_thread(server.start)  # crash recovery replays the WAL
        await wait_until(lambda: _at_least(url, total), timeout=240, interval=0.5)
        assert worker.alive()
        assert worker.terminate() == 0
        report = await delivery_report(url)
        assert report["completed_positions"] == total
        assert report["duplicates"] == []
        assert set(report["states"]) <= {"COMPLETED"}, report
    finally:
        await asyncio.to_thread(server.stop)
