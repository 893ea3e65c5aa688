"""`cancel_on`: a signal event cancels the running and waiting runs of its key."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pydantic

from eventflow import App, flow
from eventflow.testing import TestApp
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.controls._harness import committed, control_logs, memory_topic, send_all, settings


class Step(pydantic.BaseModel):
    id: str
    order: str = ""


def cancel_signal(document: dict[str, Any]) -> str | None:
    return document.get("cancel")


async def test_a_signal_cancels_the_runs_of_its_key(database_url: str) -> None:
    source, group = memory_topic("cancelon")
    never = asyncio.Event()
    ran: list[str] = []
    cancelled: list[str] = []

    @flow(name="cancellable-steps")
    async def step(step: Step) -> str:
        ran.append(step.id)
        try:
            if step.id == "o1":
                await never.wait()
        except asyncio.CancelledError:
            cancelled.append(step.id)
            raise
        return step.id

    app = App(settings(database_url))
    app.subscribe(source, step, concurrency=1, cancel_on=cancel_signal, cancel_key="order")
    async with TestApp(app, database_url=database_url) as test:
        runner = test.worker.runners[0]
        send_all(test, source, [{"id": "o1", "order": "A"}, {"id": "o2", "order": "A"}])
        send_all(test, source, [{"id": "o3", "order": "B"}])
        await wait_until(lambda: runner.stats.waiting["concurrency"] == 2, timeout=60)
        assert ran == ["o1"]
        send_all(test, source, [{"id": "s1", "cancel": "A"}])
        await wait_until(lambda: runner.stats.completed == 1, timeout=30)  # o3, freed
        await runner.commit()
        assert await committed(database_url, group) == 4
    never.set()
    assert ran == ["o1", "o3"] and cancelled == ["o1"]  # o2 never started
    assert runner.stats.decisions[("cancel_on", "signals")] == 1
    assert runner.stats.decisions[("cancel_on", "cancelled")] == 2
    runs = {r["event_offset"]: r for r in await flow_runs(database_url)}
    states = Counter((r["state_type"], r["state_name"]) for r in runs.values())
    assert states == {
        ("CANCELLED", "CancelledByEvent"): 2,
        ("COMPLETED", "Completed"): 1,
        ("CANCELLED", "CancelSignal"): 1,
    }
    signal = runs[3]
    assert signal["state_name"] == "CancelSignal"
    assert runs[0]["linked_run_id"] == runs[1]["linked_run_id"] == signal["id"]
    messages = [log["message"] for log in await control_logs(database_url)]
    assert "not run: a cancel signal for key 'A'; cancelled 2 run(s)" in messages
