"""Backfills over a Kafka topic's offset range or time range, against a real broker."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from connectors.kafka import KafkaRangeSource
from eventflow import Settings, backfill_async, flow
from eventflow._store import _schema as schema
from tests._kafka import Kafka, consume_all, create_topic, produce
from tests._store import flow_runs, rows

pytestmark = pytest.mark.kafka

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))


@flow(name="bf-kafka")
async def handle(id: str, n: int) -> int:
    return n


def settings(url: str) -> Settings:
    return Settings(database_url=url, flush_interval=0.02, commit_interval=0.2)


async def test_an_offset_range_runs_exactly_the_events_in_it_once(
    kafka: Kafka, sqlite_url: str
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=3)
    messages = [(f"k{i % 7}", orjson.dumps({"id": f"e{i}", "n": i})) for i in range(300)]
    await produce(kafka.bootstrap, topic, messages)
    records = await consume_all(kafka.bootstrap, topic, expected=300)
    expected = {(r.partition, r.offset) for r in records if 10 <= r.offset < 40}

    def source() -> KafkaRangeSource:
        return KafkaRangeSource(
            topic, bootstrap_servers=kafka.bootstrap, from_offset=10, to_offset=40
        )

    result = await backfill_async(handle, source(), settings=settings(sqlite_url))

    runs = await flow_runs(sqlite_url)
    positions = Counter((r["event_partition"], r["event_offset"]) for r in runs)
    assert set(positions) == expected and set(positions.values()) == {1}
    assert (result.total, result.completed, result.failed) == (len(expected), len(expected), 0)
    assert {r["state_type"] for r in runs} == {"COMPLETED"}
    by_position = {(r.partition, r.offset): orjson.loads(r.value)["n"] for r in records}
    assert all(
        r["result"] == str(by_position[(r["event_partition"], r["event_offset"])]) for r in runs
    )
    stored = await rows(sqlite_url, schema.consumer_offsets)
    assert {(s["partition"], s["next_offset"]) for s in stored} == {(p, 40) for p in range(3)}
    assert {s["group_id"] for s in stored} == {f"backfill:bf-kafka:kafka:{topic}[10:40]"}

    again = await backfill_async(handle, source(), settings=settings(sqlite_url))
    assert (again.completed, again.already_done) == (0, len(expected))
    assert len(await flow_runs(sqlite_url)) == len(expected)


async def test_a_time_range_uses_the_records_timestamps(kafka: Kafka, sqlite_url: str) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    base_ms = (int(time.time()) - 3600) * 1000  # an hour ago, one record a second
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(120):
            await producer.send_and_wait(
                topic,
                orjson.dumps({"id": f"t{i}", "n": i}),
                partition=i % 2,
                timestamp_ms=base_ms + i * 1000,
            )
    finally:
        await producer.stop()
    since = datetime.fromtimestamp((base_ms + 30_000) / 1000, UTC)
    until = datetime.fromtimestamp((base_ms + 75_000) / 1000, UTC)

    source = KafkaRangeSource(topic, bootstrap_servers=kafka.bootstrap, since=since, until=until)
    result = await backfill_async(handle, source, settings=settings(sqlite_url))

    runs = await flow_runs(sqlite_url)
    assert sorted(int(r["result"]) for r in runs) == list(range(30, 75))  # [since, until)
    assert (result.completed, result.total) == (45, 45)
    # offsets_for_times found the range's ends: record i is offset i // 2 in partition i % 2
    assert source.ranges == {0: (15, 38), 1: (15, 37)}
    for run in runs:
        assert since.timestamp() <= run["event_time"].timestamp() < until.timestamp()


async def test_a_range_backfill_from_the_command_line(
    kafka: Kafka, sqlite_url: str, tmp_path: Path
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=2)
    await produce(
        kafka.bootstrap, topic, [(None, orjson.dumps({"id": f"c{i}", "n": i})) for i in range(40)]
    )
    flows = tmp_path / "flows.py"
    flows.write_text(
        "from eventflow import flow\n\n"
        "@flow(name='bf-cli-kafka')\n"
        "def handle(id: str, n: int) -> int:\n"
        "    return n\n"
    )
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": sqlite_url}
    command = [EVENTFLOW, "backfill", f"{flows}:handle", "--kafka-topic", topic]
    options = ["--bootstrap", kafka.bootstrap, "--partition", "1"]
    done = await asyncio.to_thread(
        subprocess.run,
        [*command, *options, "--from-offset", "5", "--to-offset", "12"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "7/7" in done.stderr
    runs = await flow_runs(sqlite_url)
    assert sorted((r["event_partition"], r["event_offset"]) for r in runs) == [
        (1, offset) for offset in range(5, 12)
    ]


async def test_another_range_of_the_same_topic_is_a_backfill_of_its_own(
    kafka: Kafka, sqlite_url: str
) -> None:
    topic = f"bf-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=1)
    await produce(
        kafka.bootstrap, topic, [(None, orjson.dumps({"id": f"e{i}", "n": i})) for i in range(30)]
    )

    def source(start: int, end: int) -> KafkaRangeSource:
        return KafkaRangeSource(
            topic, bootstrap_servers=kafka.bootstrap, from_offset=start, to_offset=end
        )

    later = await backfill_async(handle, source(20, 30), settings=settings(sqlite_url))
    earlier = await backfill_async(handle, source(0, 20), settings=settings(sqlite_url))
    assert (later.completed, earlier.completed) == (10, 20)  # not skipped as "already done"
    runs = await flow_runs(sqlite_url)
    assert sorted(r["event_offset"] for r in runs) == list(range(30))
