"""Retry and replay through the API: new PENDING runs linked to the old ones by retry_of."""

from __future__ import annotations

import asyncio
import time

import httpx

from eventflow._server import create_app
from eventflow._store._operator import OperatorStore
from eventflow._store._replay import ReplayError, ReplayFilter
from eventflow._store._writer import RunWriter
from tests.server._serve import serve
from tests.server.conftest import Store


def test_retry_creates_a_linked_pending_run(fresh_store: Store) -> None:
    runs = fresh_store.runs
    with serve(create_app(fresh_store.url)) as base, httpx.Client(base_url=base) as client:
        created = client.post(f"/api/flow-runs/{runs.order_failed}/retry")
        assert created.status_code == 201, created.text
        new_id = created.json()["id"]
        assert created.json() == {
            "id": new_id,
            "retry_of": runs.order_failed,
            "resumed_from": runs.order_failed,  # it reuses what completed
        }

        retry = client.get(f"/api/flow-runs/{new_id}").json()
        assert (retry["state_type"], retry["retry_of"]) == ("PENDING", runs.order_failed)
        assert retry["event"]["offset"] == 3 and retry["event"]["payload"]["password"] == "***"
        original = client.get(f"/api/flow-runs/{runs.order_failed}").json()
        assert [r["id"] for r in original["replays"]] == [new_id]

        completed = client.post(f"/api/flow-runs/{runs.order_ok[0]}/retry")
        assert completed.status_code == 409
        assert "only FAILED, CRASHED or CANCELLED" in completed.json()["detail"]

        full = client.post(f"/api/flow-runs/{runs.order_invalid}/retry", params={"full": True})
        assert full.status_code == 201 and full.json()["resumed_from"] is None  # all anew
        again = client.post(f"/api/flow-runs/{runs.order_invalid}/retry")
        assert again.status_code == 409
        assert f"retried already as run {full.json()['id']} (PENDING)" in again.json()["detail"]


def test_replay_by_filter_asks_once_per_failed_run(fresh_store: Store) -> None:
    runs = fresh_store.runs
    with serve(create_app(fresh_store.url)) as base, httpx.Client(base_url=base) as client:
        none = client.post("/api/flow-runs/replay", json={"flow_name": "etl"})
        assert none.status_code == 201 and none.json() == {"ids": [], "count": 0}
        first = client.post("/api/flow-runs/replay", json={"flow_name": "process-order"})
        assert first.status_code == 201 and first.json()["count"] == 2
        linked = {
            client.get(f"/api/flow-runs/{new_id}").json()["retry_of"]
            for new_id in first.json()["ids"]
        }
        assert linked == {runs.order_failed, runs.order_invalid}
        again = client.post("/api/flow-runs/replay", json={"flow_name": "process-order"})
        assert again.json()["count"] == 0  # already asked for
        pending = client.get("/api/flow-runs", params={"state": "PENDING"}).json()
        assert pending["total"] == 2

        bad = client.post("/api/flow-runs/replay", json={"state_types": ["COMPLETED"]})
        assert bad.status_code == 422


def test_replay_times_are_iso_8601_or_numbers_never_numeric_strings(fresh_store: Store) -> None:
    """pydantic alone reads `"0"` as 1970-01-01; the document says a date-time or a number."""
    with serve(create_app(fresh_store.url)) as base, httpx.Client(base_url=base) as client:
        for since in ("0", "-5", "2026-11-25"):
            refused = client.post("/api/flow-runs/replay", json={"since": since})
            assert refused.status_code == 422, since
            assert "ISO 8601 date-time" in refused.text
        counts = []
        for since in (0, "1970-01-01T00:00:00Z", "1970-01-01 00:00"):
            accepted = client.post("/api/flow-runs/replay", json={"since": since})
            assert accepted.status_code == 201, since
            counts.append(accepted.json()["count"])
        assert counts == [2, 0, 0]  # the failed runs, then already asked for
        listed = client.get("/api/flow-runs", params={"since": "0"})  # a query's number
        assert listed.status_code == 200 and listed.json()["total"] == 9  # 7 + 2 replays


def test_a_run_decided_by_a_flow_control_links_to_the_run_it_defers_to(
    fresh_store: Store,
) -> None:
    """As an idempotency Duplicate is written: CANCELLED, linked to the completed run."""
    original = fresh_store.runs.order_ok[0]
    writer = RunWriter(fresh_store.url)
    writer.start()
    try:
        writer.put_flow_run(
            {
                "id": "duplicate-run",
                "flow_name": "process-order",
                "state_type": "CANCELLED",
                "state_name": "Duplicate",
                "run_count": 0,
                "created_at": time.time(),
                "linked_run_id": original,
            }
        )
        writer.flush_blocking(30)
    finally:
        writer.close()
    with serve(create_app(fresh_store.url)) as base, httpx.Client(base_url=base) as client:
        run = client.get("/api/flow-runs/duplicate-run").json()
        listed = client.get("/api/flow-runs", params={"state": "CANCELLED"}).json()
    assert (run["state_name"], run["linked_run_id"]) == ("Duplicate", original)
    assert [r["linked_run_id"] for r in listed["items"]] == [original]


def test_retries_of_one_run_asked_at_once_make_one_run(fresh_store: Store) -> None:
    """Two operators clicking Retry together: the store lets one request in, on either
    database (PostgreSQL: the old run's row lock; SQLite: the write lock)."""

    async def race() -> list[str | BaseException]:
        store = OperatorStore(fresh_store.url)
        try:
            return await asyncio.gather(
                *(store.retry(fresh_store.runs.order_failed) for _ in range(8)),
                return_exceptions=True,
            )
        finally:
            await store.close()

    outcomes = asyncio.run(race())
    made = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, ReplayError)]
    assert len(made) == 1 and len(refused) == 7, outcomes
    assert all("retried already" in str(error) for error in refused)


def test_a_bulk_replay_and_retries_asked_at_once_make_one_run_each(fresh_store: Store) -> None:
    """A bulk replay racing single retries of the runs it replays: each run once."""
    runs = fresh_store.runs

    async def race() -> list[dict[str, object]]:
        stores = [OperatorStore(fresh_store.url) for _ in range(5)]
        try:
            await asyncio.gather(
                stores[0].replay(ReplayFilter(flow_name="process-order")),
                *(s.retry(runs.order_failed) for s in stores[1:3]),
                *(s.retry(runs.order_invalid) for s in stores[3:]),
                return_exceptions=True,
            )
            return await _retries(stores[0])
        finally:
            for s in stores:
                await s.close()

    async def _retries(store: OperatorStore) -> list[dict[str, object]]:
        return [
            *(await store.list_replays(runs.order_failed)),
            *(await store.list_replays(runs.order_invalid)),
        ]

    made = asyncio.run(race())
    assert sorted(str(r["retry_of"]) for r in made) == sorted(
        [runs.order_failed, runs.order_invalid]
    ), made


def _delivery(run_id: str, state: str, at: float, **event: object) -> dict[str, object]:
    return {
        "id": run_id,
        "flow_name": "redelivered",
        "state_type": state,
        "state_name": state.title(),
        "run_count": 1,
        "created_at": at,
        **event,
    }


def test_a_run_whose_event_ran_again_is_not_replayed_nor_retried(fresh_store: Store) -> None:
    """A worker killed mid-run: its run is CRASHED, and its source delivers the event again
    to a new run. Replaying the crashed run ran the event a second time."""
    kafka = {"event_source": "orders", "event_partition": 0, "event_group": "g"}
    now = time.time() - 60
    writer = RunWriter(fresh_store.url)
    writer.start()
    try:
        for row in (
            _delivery("crashed-kafka", "CRASHED", now, event_offset=5, event_id="o-5", **kafka),
            _delivery("again-kafka", "COMPLETED", now + 1, event_offset=5, event_id="o-5", **kafka),
            _delivery("crashed-http", "CRASHED", now, event_id="h-1"),
            _delivery("again-http", "FAILED", now + 1, event_id="h-1"),
            # not delivered again (yet), or only to another consumer group: replayable
            _delivery("crashed-alone", "CRASHED", now, event_offset=6, event_id="o-6", **kafka),
            _delivery("crashed-g", "CRASHED", now, event_offset=7, event_id="o-7", **kafka),
            _delivery(
                "other-group",
                "COMPLETED",
                now + 1,
                event_offset=7,
                event_id="o-7",
                **{**kafka, "event_group": "h"},
            ),
        ):
            writer.put_flow_run(row)
        writer.flush_blocking(30)
    finally:
        writer.close()
    with serve(create_app(fresh_store.url)) as base, httpx.Client(base_url=base) as client:
        refused = client.post("/api/flow-runs/crashed-kafka/retry")
        assert refused.status_code == 409
        assert refused.json()["detail"] == (
            "the event of flow run crashed-kafka was delivered again and ran as run"
            " again-kafka: retry again-kafka if it must run again"
        )
        detail = client.get("/api/flow-runs/crashed-http").json()
        assert "delivered again and ran as run again-http" in detail["retry_refused"]
        replayed = client.post("/api/flow-runs/replay", json={"flow_name": "redelivered"})
        linked = {
            client.get(f"/api/flow-runs/{i}").json()["retry_of"] for i in replayed.json()["ids"]
        }
    # the old code asked for crashed-kafka and crashed-http too
    assert linked == {"crashed-alone", "crashed-g", "again-http"}
