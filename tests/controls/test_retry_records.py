"""Retry and replay of the records flow controls write: a record that is not a run of the
flow for its own event (a Duplicate, a CancelSignal, one event of a batch) is refused by
`runs retry` (CLI and API) and left out of `runs replay`; a cancelled real event may run."""

from __future__ import annotations

import asyncio
import os
import subprocess
from typing import Any

import httpx
import pydantic

from eventflow import App, flow
from eventflow._server import create_app
from eventflow.testing import TestApp
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.controls._harness import memory_topic, settings
from tests.runtime._workers import EVENTFLOW
from tests.server._serve import serve


class Order(pydantic.BaseModel):
    id: str
    order: str = ""


def cancel_signal(document: dict[str, Any]) -> str | None:
    return document.get("cancel")


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    return subprocess.run([EVENTFLOW, *args], capture_output=True, text=True, env=env, timeout=60)


async def test_duplicates_and_cancel_signals_are_not_retried(database_url: str) -> None:
    source, _ = memory_topic("retry-records")
    never = asyncio.Event()

    @flow(name="charged-orders")
    async def charge(order: Order) -> str:
        if order.id == "o2":
            await never.wait()
        return order.id

    app = App(settings(database_url))
    app.subscribe(source, charge, idempotency_key="id", cancel_on=cancel_signal, cancel_key="order")
    async with TestApp(app, database_url=database_url) as test:
        charged = await test.publish(source, {"id": "o1", "order": "A"})
        duplicate = await test.publish(source, {"id": "o1", "order": "A"})
        blocked = test.send(source, {"id": "o2", "order": "B"})
        signal = await test.publish(source, {"cancel": "B"})
        cancelled = await blocked
    assert (charged.state, duplicate.state_name) == ("COMPLETED", "Duplicate")
    assert (signal.state_name, cancelled.state_name) == ("CancelSignal", "CancelledByEvent")
    refusals = {
        duplicate.id: f"flow run {duplicate.id} is a Duplicate of run {charged.id}, which"
        " completed its idempotency key: it has nothing to run",
        signal.id: f"flow run {signal.id} is a cancel signal (cancel_on), not a run of the"
        " flow: it has nothing to run",
    }

    with serve(create_app(database_url)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            for run_id, message in refusals.items():
                refused = await client.post(f"/api/flow-runs/{run_id}/retry")
                assert (refused.status_code, refused.json()) == (409, {"detail": message})
            # a cancelled event is a real event: it may run again
            retried = await client.post(f"/api/flow-runs/{cancelled.id}/retry")
            assert retried.status_code == 201, retried.text
    for run_id, message in refusals.items():
        done = await asyncio.to_thread(_cli, database_url, "runs", "retry", run_id)
        assert (done.returncode, done.stderr) == (1, f"Error: {message}\n")
    replays = [r for r in await flow_runs(database_url) if r["retry_of"] is not None]
    assert [r["retry_of"] for r in replays] == [cancelled.id]


class Reading(pydantic.BaseModel):
    id: str


async def test_one_event_of_a_batch_is_not_retried_its_batch_run_is(database_url: str) -> None:
    source, _ = memory_topic("retry-batch")
    failing = True

    @flow(name="batchy")
    async def batchy(events: list[Reading]) -> int:
        if failing:
            raise RuntimeError("warehouse down")
        return len(events)

    app = App(settings(database_url))
    app.subscribe(source, batchy, batch_size=2, batch_timeout=30)
    async with TestApp(app, database_url=database_url) as test:
        sent = [test.send(source, {"id": f"r{i}"}) for i in range(2)]
        records = [await s for s in sent]
        assert {(r.state, r.state_name) for r in records} == {("FAILED", "Batched")}
        batch_run = records[0].linked_run_id
        assert batch_run is not None and records[1].linked_run_id == batch_run

        refused = await asyncio.to_thread(_cli, database_url, "runs", "retry", records[0].id)
        assert (refused.returncode, refused.stderr) == (
            1,
            f"Error: flow run {records[0].id} is one event of batch run {batch_run}:"
            f" retry run {batch_run}\n",
        )
        failing = False
        replayed = await asyncio.to_thread(_cli, database_url, "runs", "replay", "--flow", "batchy")
        assert replayed.returncode == 0, replayed.stderr
        assert replayed.stdout == (
            "1 runs will be replayed by the workers running their flows; left out 2 records"
            " that cannot be retried (an event of a batch run, a duplicate, a cancel signal,"
            " an event abandoned while it waited for a flow control, or a run whose event was"
            " delivered again)\n"
        )
        [replay] = await wait_until(
            lambda: flow_runs(database_url, retry_of=batch_run, state_type="COMPLETED"), timeout=30
        )
    assert replay["result"] == "2"
    assert [r["retry_of"] for r in await flow_runs(database_url) if r["retry_of"]] == [batch_run]
