"""`idempotency_key`: a key completed within the window never runs again (restarts, Apps)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

import pydantic
import pytest

from connectors.kafka import KafkaSource
from eventflow import App, Flow, flow
from tests._kafka import Kafka, wait_until
from tests._store import flow_runs
from tests.controls._harness import (
    committed,
    control_logs,
    final_runs,
    new_topic,
    send,
    serving,
    settings,
)

pytestmark = pytest.mark.kafka


class Charge(pydantic.BaseModel):
    id: str
    amount: int = 1


def charge_flow(name: str, ran: Counter[str]) -> Flow[..., str]:
    @flow(name=name)
    async def charge(charge: Charge) -> str:
        ran[charge.id] += 1
        await asyncio.sleep(0.01)  # keep claims overlapping
        return charge.id

    return charge


def check_duplicates(runs: list[dict[str, object]]) -> dict[str, str]:
    """Every Duplicate links to the COMPLETED run of the same charge; charge id -> that run."""
    completed = {str(r["id"]): r for r in runs if r["state_type"] == "COMPLETED"}
    by_charge = {str(r["result"]).strip('"'): str(r["id"]) for r in completed.values()}
    for run in runs:
        if run["state_type"] == "CANCELLED":
            assert run["state_name"] == "Duplicate"
            original = completed[str(run["linked_run_id"])]
            assert original["event_payload"] is not None and run["event_payload"] is not None
            assert Charge.model_validate_json(original["event_payload"]).id == (  # type: ignore[arg-type]
                Charge.model_validate_json(run["event_payload"]).id  # type: ignore[arg-type]
            )
    return by_charge


async def test_duplicates_within_a_worker_and_after_a_restart(
    kafka: Kafka, database_url: str
) -> None:
    topic, group = await new_topic(kafka, "idem", partitions=2)
    ran: Counter[str] = Counter()
    charge = charge_flow("idem-charges", ran)

    def make_app() -> App:
        app = App(settings(database_url))
        app.subscribe(
            KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=group),
            charge,
            idempotency_key="id",
            idempotency_window=timedelta(hours=1),
        )
        return app

    await send(kafka, topic, [{"id": i} for i in ("o1", "o2", "o1", "o3", "o2")])
    first = make_app()
    async with serving(first):

        async def five_final() -> bool:
            return len(await final_runs(database_url)) == 5

        await wait_until(five_final, timeout=60)
    assert ran == Counter({"o1": 1, "o2": 1, "o3": 1})
    assert first.runners[0].stats.decisions[("idempotency", "duplicate")] == 2
    assert first.runners[0].stats.decisions[("idempotency", "claimed")] == 3
    assert await committed(database_url, group) == 5

    # a new worker (same group, same store): the stored offsets hold, and the keys too
    second = make_app()
    async with serving(second):
        await send(kafka, topic, [{"id": "o1"}, {"id": "o4"}, {"id": "o4"}])

        async def eight_final() -> bool:
            return len(await final_runs(database_url)) == 8

        await wait_until(eight_final, timeout=60)
    assert ran == Counter({"o1": 1, "o2": 1, "o3": 1, "o4": 1})
    assert second.runners[0].stats.received == 3  # the first five were not read again
    runs = await flow_runs(database_url)
    assert Counter((r["state_type"], r["state_name"]) for r in runs) == {
        ("COMPLETED", "Completed"): 4,
        ("CANCELLED", "Duplicate"): 4,
    }
    by_charge = check_duplicates(runs)
    assert sorted(by_charge) == ["o1", "o2", "o3", "o4"]
    o1_duplicates = [r for r in runs if r["linked_run_id"] == by_charge["o1"]]
    assert len(o1_duplicates) == 2  # one in each worker, both linked to the one run
    messages = [log["message"] for log in await control_logs(database_url)]
    assert sum(f"not run: idempotency key 'o1' was completed by run {by_charge['o1']}" in m
               for m in messages) == 2  # fmt: skip
    assert await committed(database_url, group) == 8


async def test_two_apps_on_one_store_run_each_key_once(kafka: Kafka, database_url: str) -> None:
    topic, _group = await new_topic(kafka, "idem2", partitions=2)
    ran: Counter[str] = Counter()
    charge = charge_flow("idem2-charges", ran)
    apps = []
    for n in range(2):  # two consumer groups: each App reads every event
        app = App(settings(database_url))
        app.subscribe(
            KafkaSource(topic, bootstrap_servers=kafka.bootstrap, group_id=f"{topic}-g{n}"),
            charge,
            idempotency_key=lambda doc: f"charge:{doc['id']}",
        )
        apps.append(app)
    async with serving(apps[0]), serving(apps[1]):
        # both groups hold their partitions before any run ends: a group assigned later
        # would find the other's finished runs of the same flow and offsets, and skip
        # them as redeliveries (dedupe is per flow and event position, not per group)
        await wait_until(
            lambda: all(len(a.runners[0].inflight.partitions) == 2 for a in apps), timeout=60
        )
        await send(kafka, topic, [{"id": f"c{i}"} for i in range(20)])

        async def all_final() -> bool:
            return len(await final_runs(database_url)) == 40

        await wait_until(all_final, timeout=90)
    assert ran == Counter({f"c{i}": 1 for i in range(20)})  # each charge ran once in all
    runs = await flow_runs(database_url)
    assert Counter(r["state_type"] for r in runs) == {"COMPLETED": 20, "CANCELLED": 20}
    assert len(check_duplicates(runs)) == 20
    claimed = sum(a.runners[0].stats.decisions.get(("idempotency", "claimed"), 0) for a in apps)
    duplicate = sum(a.runners[0].stats.decisions.get(("idempotency", "duplicate"), 0) for a in apps)
    assert (claimed, duplicate) == (20, 20)
    for n in range(2):
        assert await committed(database_url, f"{topic}-g{n}") == 20
