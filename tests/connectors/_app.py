"""Running a real App in-process over a SQLite store, for the connector tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson

from eventflow import App, Settings, flow
from eventflow.runtime import Source
from tests._store import flow_runs


def settings(url: str) -> Settings:
    return Settings(
        database_url=url,
        flush_interval=0.02,
        commit_interval=0.1,
        worker_lease=3,
        metrics_port=0,  # no /metrics server: tests run side by side
    )


@asynccontextmanager
async def serving(app: App) -> AsyncIterator[asyncio.Task[None]]:
    """`app.serve` in a task until the block ends; then a graceful stop, which must succeed."""
    stop = asyncio.Event()
    task = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    try:
        yield task
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def recording_flow(name: str) -> tuple[Any, list[dict[str, Any]]]:
    """A flow that records the JSON object of each event it runs for."""
    seen: list[dict[str, Any]] = []

    @flow(name=name)
    async def record(item: dict[str, Any]) -> str:
        seen.append(item)
        return str(item.get("id"))

    return record, seen


def app_for(url: str, source: Source, flow_: Any) -> App:
    app = App(settings(url))
    app.subscribe(source, flow_, params=lambda event: {"item": _decode(event.value)})
    return app


def _decode(value: bytes) -> Any:
    return orjson.loads(value)


async def completed_event_ids(url: str, flow_name: str) -> list[str]:
    runs = await flow_runs(url, flow_name=flow_name, state_type="COMPLETED")
    return [r["event_id"] for r in runs]
