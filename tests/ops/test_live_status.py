"""`eventflow run` in a terminal shows a live status line (events/s, in flight, failures)."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import subprocess
import time
import uuid

import orjson
import pytest

from tests._kafka import Kafka, create_topic, produce
from tests._services import ROOT
from tests.runtime._workers import EVENTFLOW

pytestmark = pytest.mark.kafka


def read_until(fd: int, needle: bytes, timeout: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} never appeared in {seen[-500:]!r}"
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            seen += os.read(fd, 65536)
    return seen


async def fill(bootstrap: str, topic: str) -> None:
    await create_topic(bootstrap, topic, partitions=1)
    orders = [orjson.dumps({"id": f"o{i}", "customer_id": "c", "amount": i}) for i in range(50)]
    await produce(bootstrap, topic, [("c", value) for value in [*orders, b"{bad"]])


def test_a_terminal_gets_a_live_status_line(kafka: Kafka, sqlite_url: str) -> None:
    topic = f"live-{uuid.uuid4().hex[:8]}"
    asyncio.run(fill(kafka.bootstrap, topic))
    leader, follower = pty.openpty()
    env = {
        **os.environ,
        "EVENTFLOW_DATABASE_URL": sqlite_url,
        "EVENTFLOW_METRICS_PORT": "0",
        "BOOTSTRAP": kafka.bootstrap,
        "TOPIC": topic,
        "GROUP": f"g-{topic}",
        "WORK_SECONDS": "0",
    }
    worker = subprocess.Popen(
        [EVENTFLOW, "run", "tests/apps/kafka_worker.py:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=follower,
    )
    os.close(follower)
    try:
        seen = read_until(leader, b"51 in, 0 in flight, 1 failed", timeout=60)
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0
        os.close(leader)
    line = seen.rsplit(b"\r", 1)[-1].decode()
    assert f"kafka:{topic}->worker-orders:" in line
    assert "events/s" in line and "store ok" in line
