"""What the lineage tests share: a steady producer, workers, the store's graph, the notices."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from eventflow import App, Settings
from eventflow._lineage import Graph
from eventflow._server import create_app
from eventflow._store import _lineage
from eventflow._store._engine import make_engine
from tests._receiver import Receiver
from tests.server._serve import serve

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))

INTERVAL = 0.3
"""Seconds between a worker's lineage evaluations in these tests."""


def settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        flush_interval=0.02,
        commit_interval=0.2,
        worker_lease=3,
        metrics_port=0,
        lineage_interval=INTERVAL,
    )


class Producer:
    """Produces one event every `every` seconds while `on`, from a task of the test's loop."""

    def __init__(self, bootstrap: str, topic: str, every: float = 0.2) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.every = every
        self.on = asyncio.Event()
        self.sent = 0

    async def run(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await producer.start()
        try:
            while True:
                await self.on.wait()
                await producer.send_and_wait(
                    self.topic, orjson.dumps({"id": f"o{self.sent}"}), key=b"k"
                )
                self.sent += 1
                await asyncio.sleep(self.every)  # a pace of events, not synchronisation
        finally:
            await producer.stop()


@contextlib.asynccontextmanager
async def producing(producer: Producer) -> AsyncIterator[Producer]:
    task = asyncio.create_task(producer.run())
    try:
        yield producer
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def serving(app: App) -> AsyncIterator[App]:
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    try:
        yield app
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def graph(url: str) -> Graph:
    engine = make_engine(url)
    try:
        return await _lineage.refreshed(engine, persist=False)
    finally:
        await engine.dispose()


async def settled_fresh(url: str, dataset: str) -> bool:
    """The dataset has had an event, is not late, and no late notice is out."""
    found = (await graph(url)).datasets.get(dataset)
    return found is not None and found.last_at is not None and found.late_since is None


async def settled(url: str, dataset: str, receiver: Receiver) -> list[int] | None:
    """[bodies received so far] once the dataset is fresh in the store and every late notice
    of it received has its fresh one (a webhook is posted after its transition: a slow first
    start's late and fresh pair must be in before a test counts from here); else None."""
    if not await settled_fresh(url, dataset):
        return None
    with receiver.lock:
        bodies = list(receiver.bodies)
    states = [b["eventflow"]["state"] for b in bodies if b.get("eventflow", {}).get("dataset")]
    if states.count("LATE") != states.count("FRESH"):
        return None
    return [len(bodies)]


async def rounds_later(apps: list[App], rounds: int) -> None:
    """Wait until every app's lineage loop evaluated `rounds` more times (bounded)."""
    start = [_rounds(app) for app in apps]
    for _ in range(int(600 / 0.05)):
        if all(_rounds(a) >= s + rounds for a, s in zip(apps, start, strict=True)):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the lineage loops did not evaluate")


def _rounds(app: App) -> int:
    return 0 if app.lineage is None else app.lineage.rounds


def notices(receiver: Receiver, since: int = 0) -> list[dict[str, Any]]:
    """The dataset notices received (after the first `since` bodies): their `eventflow` part."""
    with receiver.lock:
        bodies = list(receiver.bodies[since:])
    return [b["eventflow"] for b in bodies if b.get("eventflow", {}).get("dataset")]


async def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`eventflow <args>` on the store at `url`, off the event loop the workers run on."""
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    return await asyncio.to_thread(
        subprocess.run, [EVENTFLOW, *args], capture_output=True, text=True, env=env, timeout=60
    )


async def api_lineage(url: str) -> Any:
    """GET /api/lineage from the real server on 127.0.0.1, off the workers' event loop."""

    def get() -> Any:
        with serve(create_app(url, migrate=False)) as base:
            return httpx.get(f"{base}/api/lineage", timeout=10).json()

    return await asyncio.to_thread(get)
