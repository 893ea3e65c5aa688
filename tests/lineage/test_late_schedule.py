"""A scheduled run missed (its worker stopped over its time) makes the schedule late, and
the flows downstream of it affected; another worker sends the one notice."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from connectors.schedule import IntervalSchedule
from eventflow import App, WebhookNotifier, flow
from tests._kafka import wait_until
from tests._receiver import receiving
from tests._store import flow_runs
from tests.lineage._harness import graph, notices, rounds_later, serving, settings, settled

pytestmark = pytest.mark.slow(30)


@flow(name="lin-nightly", writes=["table:lin.nightly"])
def nightly() -> None:
    return None


@flow(name="lin-report", reads=["table:lin.nightly"])
def report() -> None:
    return None


async def test_a_missed_scheduled_run_turns_the_schedule_late(database_url: str) -> None:
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    dataset = f"schedule:{name}"
    with receiving() as receiver:
        hook = WebhookNotifier(receiver.url, backoff=0.05)
        scheduler = App(settings(database_url), notifiers=[hook])
        scheduler.subscribe(
            IntervalSchedule(timedelta(seconds=2), name=name, deadline=timedelta(seconds=3)),
            nightly,
        )
        other = App(settings(database_url), notifiers=[WebhookNotifier(receiver.url)])
        other.subscribe(IntervalSchedule(timedelta(hours=1), name=f"r-{name}"), report)
        async with serving(other):
            async with serving(scheduler):
                await wait_until(
                    lambda: flow_runs(
                        database_url, flow_name="lin-nightly", state_type="COMPLETED"
                    ),
                    30,
                )
                [start] = await wait_until(lambda: settled(database_url, dataset, receiver), 30)
                shown = (await graph(database_url)).datasets[dataset]
                assert shown.due_at is not None and shown.last_at is not None
                assert shown.due_at - shown.last_at == pytest.approx(5.0)  # next tick + deadline
            # the scheduler is stopped: its next tick is not run; the other worker notices
            await wait_until(lambda: notices(receiver, start), 30)
            [late] = notices(receiver, start)
            assert late["state"] == "LATE" and late["dataset"] == dataset
            assert late["affected_flows"] == ["lin-nightly", "lin-report"]
            assert late["affected_datasets"] == ["table:lin.nightly"]
            stored = (await graph(database_url)).to_json(now=time.time())
            states = {d["name"]: d["state"] for d in stored["datasets"]}
            assert states[dataset] == "late" and states["table:lin.nightly"] == "affected"
            await rounds_later([other], 5)
            assert len(notices(receiver, start)) == 1
