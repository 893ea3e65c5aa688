"""The API over a store a real worker is writing: its workers and sources appear live, and a
retry asked for through the API is run by that worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from connectors.jsonl import JsonlSource
from eventflow import App, flow
from eventflow._server import create_app
from tests._kafka import wait_until
from tests.connectors._app import serving, settings
from tests.server._serve import serve

FAIL_ONCE = {"b"}


@flow(name="jsonl-orders")
def jsonl_orders(id: str, amount: int) -> int:
    if id in FAIL_ONCE:
        FAIL_ONCE.discard(id)  # the retry succeeds
        raise RuntimeError(f"order {id} failed")
    return amount


async def test_worker_sources_and_a_retry_run_by_the_worker(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    lines = [orjson.dumps({"id": i, "amount": n}) for i, n in (("a", 1), ("b", 2), ("c", 3))]
    (tmp_path / "orders.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    app = App(settings(url))
    app.subscribe(JsonlSource(tmp_path / "orders.jsonl", group_id="g"), jsonl_orders)

    async with serving(app):
        with serve(create_app(url, worker_lease=3)) as base:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:

                async def get(path: str, **params: Any) -> Any:
                    response = await client.get(path, params=params)
                    assert response.status_code == 200, response.text
                    return response.json()

                async def ended() -> list[dict[str, Any]]:
                    page = await get("/api/flow-runs", flow="jsonl-orders")
                    done = [r for r in page["items"] if r["ended_at"] is not None]
                    return done if len(done) == 3 else []

                runs = await wait_until(ended, timeout=30)
                [failed] = [r for r in runs if r["state_type"] == "FAILED"]
                assert failed["event_offset"] == 2 and failed["error"] == (
                    "RuntimeError: order b failed"
                )

                workers = await get("/api/workers")
                assert [(w["id"], w["alive"]) for w in workers] == [(app.worker_id, True)]

                async def reported() -> Any:
                    sources = await get("/api/sources", flow="jsonl-orders")
                    subs = sources["subscriptions"]
                    return subs[0] if subs and subs[0]["received"] == 3 else None

                status = await wait_until(reported, timeout=30)  # written every 5 s
                assert (status["workers"], status["completed"], status["failed"]) == (1, 2, 1)

                # the subscription's page and the dashboard, from what the worker wrote
                name = quote(status["subscription"], safe="")
                sub = await get(f"/api/subscriptions/{name}")
                # a JSONL source is finite: at the file's end it is done, "stopped"
                assert sub["state"] in {"running", "stopped"} and sub["store_up"]
                assert (sub["source"], sub["failed_events"]) == (status["source"], 1)
                assert [d["run"]["id"] for d in sub["recent_dead_letters"]] == [failed["id"]]
                assert [(w["worker_id"], w["alive"]) for w in sub["workers"]] == [
                    (app.worker_id, True)
                ]
                assert [p["partition"] for p in sub["partitions"]] == ["orders.jsonl/0"]
                assert sub["partitions"][0]["stored"] is not None
                dashboard = await get("/api/dashboard")
                [health] = dashboard["subscriptions"]
                assert health["subscription"] == status["subscription"]
                assert dashboard["workers_alive"] == 1 and dashboard["runs"] == 3

                retry = await client.post(f"/api/flow-runs/{failed['id']}/retry")
                assert retry.status_code == 201
                new_id = retry.json()["id"]

                async def rerun() -> Any:
                    run = await get(f"/api/flow-runs/{new_id}")
                    return run if run["state_type"] == "COMPLETED" else None

                done = await wait_until(rerun, timeout=30)
                assert (done["retry_of"], done["result"], done["worker_id"]) == (
                    failed["id"],
                    2,
                    app.worker_id,
                )
                original = await get(f"/api/flow-runs/{failed['id']}")
                assert [(r["id"], r["state_type"]) for r in original["replays"]] == [
                    (new_id, "COMPLETED")
                ]
