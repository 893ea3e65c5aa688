"""Running Apps with flow controls, for the tests: on eventflow.testing, or a real broker.

The controls' logic runs on `TestApp` (sources in memory, the real store of
each kind); what needs Kafka itself (its consumer pausing, restarts, workers
sharing a store) runs against the broker.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson

from connectors.kafka import KafkaSource
from eventflow import App, Settings
from eventflow._store import _schema as schema
from eventflow.testing import TestApp
from tests._kafka import Kafka, create_topic, produce
from tests._store import flow_runs, rows


def settings(url: str) -> Settings:
    return Settings(
        database_url=url, flush_interval=0.02, commit_interval=0.2, worker_lease=3, metrics_port=0
    )


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[App]:
    """Serve `app` for the block, then stop it gracefully (also when the block fails)."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    try:
        await asyncio.wait_for(app.started.wait(), 60)
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def memory_topic(prefix: str) -> tuple[KafkaSource, str]:
    """A Kafka source never connected (TestApp reads from memory in its place), and its group."""
    topic, group = f"{prefix}-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    return KafkaSource(topic, bootstrap_servers="127.0.0.1:1", group_id=group), group


def send_all(test: TestApp, source: KafkaSource, documents: Sequence[dict[str, Any]]) -> None:
    """One event per document, without a key (no key ordering between them), not waited for."""
    for document in documents:
        test.send(source, document)


async def new_topic(kafka: Kafka, prefix: str, partitions: int = 1) -> tuple[str, str]:
    topic, group = f"{prefix}-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, partitions=partitions)
    return topic, group


async def send(kafka: Kafka, topic: str, documents: Sequence[dict[str, Any]]) -> None:
    """One record per document, each with a Kafka key of its own (no key ordering between them)."""
    await produce(
        kafka.bootstrap, topic, [(f"r{uuid.uuid4().hex[:8]}", orjson.dumps(d)) for d in documents]
    )


async def final_runs(url: str) -> list[dict[str, Any]]:
    return [r for r in await flow_runs(url) if r["state_type"] in ("COMPLETED", "CANCELLED")]


async def committed(url: str, group: str) -> int:
    offsets = await rows(url, schema.consumer_offsets, schema.consumer_offsets.c.group_id == group)
    return sum(int(o["next_offset"]) for o in offsets)


async def control_logs(url: str) -> list[dict[str, Any]]:
    return await rows(url, schema.logs, schema.logs.c.logger == "eventflow.controls")
