"""A real Kafka broker for the tests, and small client helpers (aiokafka)."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from tests._services import ROOT


def free_port_pair() -> int:
    """A port whose successor is free too (the broker's controller listens there)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair on 127.0.0.1")


@dataclass
class Kafka:
    """A single-node KRaft broker on loopback, run by scripts/kafka.sh."""

    data_dir: Path
    port: int

    @classmethod
    def start_new(cls) -> Kafka:
        broker = cls(Path(tempfile.mkdtemp(prefix="eventflow-kafka-")), free_port_pair())
        atexit.register(broker.remove)
        broker.start()
        return broker

    def remove(self) -> None:
        """Stop the broker if it runs and delete its data."""
        subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), "stop", str(self.data_dir)],
            capture_output=True,
            timeout=300,
            check=False,
        )
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _script(self, *args: str) -> None:
        done = subprocess.run(
            [str(ROOT / "scripts" / "kafka.sh"), *args], capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise RuntimeError(f"kafka.sh {' '.join(args)} failed: {done.stderr}{done.stdout}")

    def start(self) -> None:
        self._script("start", str(self.data_dir), str(self.port))

    def stop(self) -> None:
        self._script("stop", str(self.data_dir))

    def signal(self, signum: int) -> None:
        """Send `signum` to the broker (SIGSTOP: a broker that hangs rather than one gone)."""
        os.kill(int((self.data_dir / "kafka.pid").read_text()), signum)


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1)]
        )
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, messages: Sequence[tuple[str | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, value, key=key.encode() if key is not None else None)
            for key, value in messages
        ]
        await producer.flush()
        for future in futures:
            await future
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, expected: int, timeout: float = 60) -> list[Any]:
    """Read `topic` from the beginning until `expected` records arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


async def partition_numbers(bootstrap: str, topic: str) -> list[int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    numbers = sorted(p["partition"] for p in described["partitions"])
    assert numbers, f"no topic {topic}"
    return numbers


async def consume_to_end(
    bootstrap: str, topic: str, isolation_level: str = "read_committed", timeout: float = 60
) -> list[Any]:
    """Every record of `topic` up to its end (with read_committed: its last stable offset)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level=isolation_level,
    )
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        partitions = [TopicPartition(topic, p) for p in await partition_numbers(bootstrap, topic)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while time.monotonic() < deadline:
            if all([await consumer.position(p) >= ends[p] for p in partitions]):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
        else:
            raise AssertionError(f"{topic} not read to its end in {timeout}s")
    finally:
        await consumer.stop()
    return records


async def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.1) -> Any:
    """Poll an async or sync condition until it is truthy; its last value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition still false after {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
