"""`debounce`: only the last event of a burst runs; the rest are linked skips, committed."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pydantic

from connectors.kafka import KafkaSource
from eventflow import App, flow
from eventflow.testing import TestApp
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.controls._harness import committed, control_logs, memory_topic, settings


class Update(pydantic.BaseModel):
    id: str
    customer_id: str


def publish_updates(test: TestApp, source: KafkaSource, *ids: str) -> None:
    """Keyed by customer in Kafka too: debouncing comes before per-key ordering."""
    for i in ids:
        test.send(source, {"id": i, "customer_id": i[0]}, key=i[0])


async def test_only_the_last_event_of_a_burst_runs(database_url: str) -> None:
    source, group = memory_topic("debounce")
    ran: list[str] = []

    @flow(name="debounced-updates")
    async def sync_customer(update: Update) -> str:
        ran.append(update.id)
        return update.id

    app = App(settings(database_url))
    app.subscribe(source, sync_customer, debounce=timedelta(seconds=2), debounce_key="customer_id")
    async with TestApp(app, database_url=database_url) as test:
        runner = test.worker.runners[0]
        publish_updates(test, source, "a1", "a2", "a3", "b1")
        await wait_until(lambda: runner.stats.waiting["debounce"] == 2, timeout=60)
        assert runner.stats.decisions == {("debounce", "superseded"): 2}
        assert ran == [] and runner.in_flight == 2  # a3 and b1 are held
        await runner.commit()
        assert await committed(database_url, group) == 2  # a1 and a2 are done with
        await wait_until(lambda: runner.stats.completed == 2, timeout=30)
        publish_updates(test, source, "a4")  # a new burst
        await wait_until(lambda: runner.stats.completed == 3, timeout=30)
    assert sorted(ran[:2]) == ["a3", "b1"] and ran[2:] == ["a4"]
    assert runner.stats.decisions == {("debounce", "superseded"): 2, ("debounce", "ran"): 3}
    runs = await flow_runs(database_url)
    assert Counter((r["state_type"], r["state_name"]) for r in runs) == {
        ("COMPLETED", "Completed"): 3,
        ("CANCELLED", "Debounced"): 2,
    }
    a3_run = next(r["id"] for r in runs if r["result"] == '"a3"')
    skipped = [r for r in runs if r["state_name"] == "Debounced"]
    assert {r["event_offset"] for r in skipped} == {0, 1}
    assert {r["linked_run_id"] for r in skipped} == {a3_run}  # linked to the run that ran
    messages = [log["message"] for log in await control_logs(database_url)]
    assert sum(f"run {a3_run} runs for the last event" in m for m in messages) == 2
    assert await committed(database_url, group) == 5
