"""Outages of realistic length: the broker or the database gone for a minute or five.

Each test runs a real `eventflow run` worker against its own broker (or its own
PostgreSQL server), takes the service away mid-stream and brings it back on the
same port. The worker must ride it out by itself, quietly, and then consume,
store and commit again: no silent death, no offsets stuck where the outage began.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from eventflow._store import _schema as schema
from tests._kafka import Kafka, produce, wait_until
from tests._services import Postgres, free_port
from tests._store import rows
from tests.runtime._workers import Worker, completed_count, delivery_report
from tests.runtime.test_kafka_crashes import _kafka_committed, new_topic, worker_env
from tests.runtime.test_kafka_delivery import orders

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(900)]

OUTAGE_SECONDS = 60.0
"""How long the service stays away: long enough for the group session to expire."""

LOG_LINES_PER_OUTAGE = 50


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


class Stream:
    """Orders produced in rounds to one topic, and what the worker made of them."""

    def __init__(self, broker: Kafka, url: str, topic: str, group: str, partitions: int) -> None:
        self.broker, self.url, self.topic, self.group = broker, url, topic, group
        self.partitions = partitions
        self.produced = 0

    async def produce(self, count: int) -> None:
        batch = orders(self.produced + count, keys=50)[self.produced :]
        await produce(self.broker.bootstrap, self.topic, batch)
        self.produced += count

    async def completed_at_least(self, count: int) -> bool:
        try:
            return await completed_count(self.url) >= count
        except Exception:  # the database may be restarting
            return False

    async def ends(self) -> dict[int, int]:
        """Per partition, the offset after the last record (what a caught-up group commits)."""
        report = await rows(self.url, schema.flow_runs)
        ends = {p: 0 for p in range(self.partitions)}
        for run in report:
            ends[run["event_partition"]] = max(
                ends[run["event_partition"]], run["event_offset"] + 1
            )
        return ends

    async def offsets_caught_up(self) -> bool:
        """Stored and Kafka-committed offsets both at the end of every partition."""
        ends = await self.ends()
        if sum(ends.values()) != self.produced:
            return False
        stored = {
            o["partition"]: o["next_offset"]
            for o in await rows(self.url, schema.consumer_offsets)
            if o["topic"] == self.topic
        }
        if stored != ends:
            return False
        committed = await _kafka_committed(self.broker, self.topic, self.group, self.partitions)
        return committed == ends

    async def caught_up(self, timeout: float) -> None:
        """Every event completed, then offsets at the end within 30 s of the last run."""
        await wait_until(
            lambda: self.completed_at_least(self.produced), timeout=timeout, interval=0.5
        )
        await wait_until(self.offsets_caught_up, timeout=30, interval=0.5)
        report = await delivery_report(self.url)
        assert report["completed_positions"] == self.produced, report
        assert report["duplicates"] == [], report


def log_lines(path: Path) -> list[str]:
    return path.read_bytes().decode(errors="replace").splitlines()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def broker_outage(
    broker: Kafka, worker: Worker, log: Path, seconds: float = OUTAGE_SECONDS
) -> None:
    """Stop the broker for `seconds`, start it on the same port.

    Meanwhile the worker's log stays short and it idles (a client that retries
    in a tight loop burns a core while there is nothing to do).
    """
    before = len(log_lines(log))
    await asyncio.to_thread(broker.stop)
    cpu_before = cpu_seconds(worker.process.pid)
    await asyncio.sleep(seconds)  # the outage itself, not a synchronisation
    cpu = cpu_seconds(worker.process.pid) - cpu_before
    await asyncio.to_thread(broker.start)
    lines = log_lines(log)
    assert len(lines) - before <= LOG_LINES_PER_OUTAGE, "\n".join(lines[before:])
    assert cpu < 0.5 * seconds, f"the worker used {cpu:.1f}s of CPU in a {seconds:.0f}s outage"


@pytest.mark.slow(320)
async def test_broker_outages_of_a_minute_end_by_themselves(
    tmp_path: Path, sqlite_url: str
) -> None:
    broker = Kafka.start_new()  # its own broker: the other tests keep theirs
    log = tmp_path / "worker.log"
    try:
        topic, group = await new_topic(broker, partitions=4)
        stream = Stream(broker, sqlite_url, topic, group, partitions=4)
        env = worker_env(broker, sqlite_url, topic, group, WORK_SECONDS="0.2", MAX_IN_FLIGHT="40")
        worker = Worker(env, log)
        # twice in a row (the failure this guards against was intermittent) ...
        for _round in range(2):
            await stream.produce(1000)
            await wait_until(
                lambda: stream.completed_at_least(stream.produced - 700), timeout=120, interval=0.2
            )
            await broker_outage(broker, worker, log)
            assert worker.alive()
            await stream.caught_up(timeout=180)
        # ... then two outages back to back, the broker up for a few seconds between
        await stream.produce(1000)
        await wait_until(
            lambda: stream.completed_at_least(stream.produced - 700), timeout=120, interval=0.2
        )
        await broker_outage(broker, worker, log)
        await asyncio.sleep(3)  # the broker is up only briefly between the two outages
        await broker_outage(broker, worker, log)
        await stream.caught_up(timeout=180)
        assert worker.terminate() == 0
    finally:
        await asyncio.to_thread(broker.stop)


@pytest.mark.postgres
@pytest.mark.parametrize(
    "seconds",
    [
        pytest.param(60, id="1-minute", marks=pytest.mark.slow(70)),
        pytest.param(300, id="5-minutes", marks=pytest.mark.slow(310)),
    ],
)
async def test_postgres_outages_end_by_themselves(
    kafka: Kafka, tmp_path: Path, seconds: float
) -> None:
    server = Postgres.start_new()  # its own server: the other tests keep theirs
    log = tmp_path / "worker.log"
    try:
        url = server.url()
        topic, group = await new_topic(kafka, partitions=2)
        stream = Stream(kafka, url, topic, group, partitions=2)
        port = free_port()
        env = worker_env(
            kafka,
            url,
            topic,
            group,
            WORK_SECONDS="0.05",
            MAX_IN_FLIGHT="50",
            EVENTFLOW_METRICS_PORT=str(port),
        )
        await stream.produce(3000)
        worker = Worker(env, log)
        await wait_until(lambda: stream.completed_at_least(300), timeout=120, interval=0.2)

        before = len(log_lines(log))
        await asyncio.to_thread(server.stop)
        stopped = time.monotonic()
        # visible while it lasts: the store is down, the worker alive but not ready
        await wait_until(lambda: _metric(port, "eventflow_store_up", 0.0), timeout=30)
        assert await _status(port, "/readyz") == 503
        assert await _status(port, "/livez") == 200
        await asyncio.sleep(seconds - (time.monotonic() - stopped))  # the outage itself
        assert worker.alive()
        # a database outage is not a stall: a restart would not help, the probe says alive
        assert await _status(port, "/livez") == 200
        await asyncio.to_thread(server.start)
        lines = log_lines(log)
        allowed = 20 + 3 * seconds / 30  # a few lines, then a summary or two each 30 s
        assert len(lines) - before <= allowed, "\n".join(lines[before:])

        await wait_until(lambda: _metric(port, "eventflow_store_up", 1.0), timeout=60)
        await stream.caught_up(timeout=180)
        assert await _status(port, "/readyz") == 200
        assert worker.terminate() == 0
    finally:
        await asyncio.to_thread(server.stop)


async def _metric(port: int, name: str, expected: float) -> bool:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    except httpx.HTTPError:
        return False
    return f"{name} {expected}" in text.splitlines()


async def _status(port: int, path: str) -> int:
    async with httpx.AsyncClient(timeout=5) as client:
        return (await client.get(f"http://127.0.0.1:{port}{path}")).status_code
