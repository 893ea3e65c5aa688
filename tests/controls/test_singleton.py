"""`singleton_key`: one run per key; later events are skipped, or cancel the run in flight."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import pydantic
import pytest

from eventflow import App, flow, task
from eventflow._store import _schema as schema
from eventflow.testing import TestApp
from tests._kafka import wait_until
from tests._store import flow_runs, rows, run_detail
from tests.controls._harness import committed, control_logs, memory_topic, send_all, settings


class Job(pydantic.BaseModel):
    id: str
    account: str


async def test_skip_mode_skips_events_while_the_key_runs(database_url: str) -> None:
    source, group = memory_topic("single")
    release = asyncio.Event()
    ran: list[str] = []

    @flow(name="singleton-skip")
    async def refresh(job: Job) -> str:
        ran.append(job.id)
        if job.id == "a1":
            await release.wait()
        return job.id

    app = App(settings(database_url))
    app.subscribe(source, refresh, singleton_key="account")
    async with TestApp(app, database_url=database_url) as test:
        runner = test.worker.runners[0]
        send_all(test, source, [{"id": i, "account": i[0]} for i in ("a1", "a2", "a3", "b1")])
        await wait_until(lambda: runner.stats.completed == 1, timeout=60)  # b1
        assert runner.stats.decisions == {("singleton", "ran"): 2, ("singleton", "skipped"): 2}
        await runner.commit()
        assert await committed(database_url, group) == 0  # a1 (offset 0) still runs
        release.set()
        await wait_until(lambda: runner.stats.completed == 2, timeout=30)
        send_all(test, source, [{"id": "a4", "account": "a"}])  # the key is free again
        await wait_until(lambda: runner.stats.completed == 3, timeout=30)
    assert sorted(ran) == ["a1", "a4", "b1"]
    runs = await flow_runs(database_url)
    assert Counter((r["state_type"], r["state_name"]) for r in runs) == {
        ("COMPLETED", "Completed"): 3,
        ("CANCELLED", "Skipped"): 2,
    }
    a1_run = next(r["id"] for r in runs if r["result"] == '"a1"')
    assert {r["linked_run_id"] for r in runs if r["state_name"] == "Skipped"} == {a1_run}
    messages = [log["message"] for log in await control_logs(database_url)]
    assert messages.count(f"not run: run {a1_run} holds singleton key 'a'") == 2
    assert await committed(database_url, group) == 5


async def test_cancel_mode_cancels_the_run_in_flight(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The superseded run and its task in flight end CANCELLED: not a crash, no crash hook."""
    source, group = memory_topic("singlec")
    never = asyncio.Event()
    cancelled: list[str] = []
    ran: list[str] = []
    crash_hooks: list[str] = []

    @task
    async def wait_for_release() -> None:
        await never.wait()

    @flow(name="singleton-cancel", on_crashed=[lambda *_: crash_hooks.append("crashed")])
    async def refresh(job: Job) -> str:
        ran.append(job.id)
        try:
            if job.id == "a1":
                await wait_for_release()
        except asyncio.CancelledError:
            cancelled.append(job.id)
            raise
        return job.id

    app = App(settings(database_url))
    app.subscribe(source, refresh, singleton_key="account", singleton_mode="cancel")
    async with TestApp(app, database_url=database_url) as test:
        runner = test.worker.runners[0]
        send_all(test, source, [{"id": "a1", "account": "a"}])
        await wait_until(lambda: ran == ["a1"], timeout=60)
        send_all(test, source, [{"id": "a2", "account": "a"}])
        await wait_until(lambda: runner.stats.completed == 1, timeout=30)
        await runner.commit()
        assert await committed(database_url, group) == 2  # the cancelled event is done with
    never.set()
    assert ran == ["a1", "a2"] and cancelled == ["a1"]
    assert runner.stats.decisions == {("singleton", "ran"): 2, ("singleton", "superseded"): 1}
    runs = {r["event_offset"]: r for r in await flow_runs(database_url)}
    assert (runs[0]["state_type"], runs[0]["state_name"]) == ("CANCELLED", "Superseded")
    assert (runs[1]["state_type"], runs[1]["result"]) == ("COMPLETED", '"a2"')
    assert runs[0]["linked_run_id"] == runs[1]["id"]
    (waited,) = (await run_detail(database_url, runs[0]["id"]))["task_runs"]
    assert (waited["state_type"], waited["state_name"]) == ("CANCELLED", "Superseded")
    assert crash_hooks == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [log for log in await rows(database_url, schema.logs) if "CRASHED" in log["message"]]
