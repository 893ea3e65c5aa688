"""`eventflow runs retry` resumes a failed run after its completed tasks (`--full`: all again),
run by a real worker over each store; a flow that takes another path runs the rest fresh."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from connectors.jsonl import JsonlSource
from eventflow import App, flow, task
from eventflow._server import create_app
from eventflow._store import _schema as schema
from tests._kafka import wait_until
from tests._store import flow_runs, rows
from tests.connectors._app import serving, settings
from tests.runtime._workers import EVENTFLOW
from tests.server._serve import serve

CALLS: Counter[str] = Counter()
BEHAVIOUR = {"fail": True, "path": "b"}


@task
def reserve(order_id: str) -> dict[str, str]:
    CALLS["reserve"] += 1
    return {"reservation": f"r-{order_id}"}


@task
def pay(reservation: dict[str, str]) -> int:
    CALLS["pay"] += 1
    return 42


@task
def refund(reservation: dict[str, str]) -> int:
    CALLS["refund"] += 1
    return -42


@task
def notify(payment: int) -> str:
    CALLS["notify"] += 1
    if BEHAVIOUR["fail"]:
        raise RuntimeError("mail server down")
    return f"sent {payment}"


@flow(name="retry-orders")
def retry_orders(id: str) -> str:
    reservation = reserve(id)
    payment = pay(reservation) if BEHAVIOUR["path"] == "b" else refund(reservation)
    return notify(payment)


def _cli(url: str, *args: str) -> str:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    done = subprocess.run([EVENTFLOW, *args], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


async def _retry(
    url: str, tmp_path: Path, *options: str, path: str = "b", bulk: bool = False
) -> dict[str, Any]:
    """Run one event to FAILED in its third task, retry it with the CLI (`bulk`: replay
    the flow's failed runs); the retry's rows."""
    CALLS.clear()
    BEHAVIOUR.update(fail=True, path="b")
    (tmp_path / "orders.jsonl").write_bytes(orjson.dumps({"id": "o1"}) + b"\n")
    app = App(settings(url))
    app.subscribe(JsonlSource(tmp_path / "orders.jsonl", group_id="g"), retry_orders)
    async with serving(app):
        [failed] = await wait_until(lambda: flow_runs(url, state_type="FAILED"), timeout=30)
        assert CALLS == {"reserve": 1, "pay": 1, "notify": 1}
        BEHAVIOUR.update(fail=False, path=path)
        if bulk:
            args = ("runs", "replay", "--flow", "retry-orders", *options)
            out = await asyncio.to_thread(_cli, url, *args)
            assert out.startswith("1 runs will be replayed")
        else:
            out = await asyncio.to_thread(_cli, url, "runs", "retry", failed["id"], *options)
            assert failed["id"] in out
        [done] = await wait_until(lambda: flow_runs(url, state_type="COMPLETED"), timeout=30)
    tasks = await rows(url, schema.task_runs)
    return {
        "failed": failed,
        "done": done,
        "old": {t["task_name"]: t for t in tasks if t["flow_run_id"] == failed["id"]},
        "new": {t["task_name"]: t for t in tasks if t["flow_run_id"] == done["id"]},
    }


async def test_retry_resumes_after_the_completed_tasks(database_url: str, tmp_path: Path) -> None:
    result = await _retry(database_url, tmp_path)
    # the retry called only the task that failed
    assert CALLS == {"reserve": 1, "pay": 1, "notify": 2}
    done, failed, old, new = result["done"], result["failed"], result["old"], result["new"]
    assert done["retry_of"] == failed["id"] and done["resumed_from"] == failed["id"]
    assert orjson.loads(done["result"]) == "sent 42"
    for name in ("reserve", "pay"):
        assert (new[name]["state_type"], new[name]["state_name"]) == ("COMPLETED", "Reused")
        assert new[name]["reused_from"] == old[name]["id"]
        assert new[name]["result"] == old[name]["result"]
    assert (new["notify"]["state_name"], new["notify"]["reused_from"]) == ("Completed", None)
    assert [new[n]["position"] for n in ("reserve", "pay", "notify")] == [0, 1, 2]
    shown_text = await asyncio.to_thread(_cli, database_url, "runs", "show", done["id"])
    assert f"retry of   {failed['id']}" in shown_text and f"resumes    {failed['id']}" in shown_text

    # the API shows which task runs were reused and from which run; it asks for full re-runs
    with serve(create_app(database_url, worker_lease=3)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            detail = (await client.get(f"/api/flow-runs/{done['id']}")).json()
            assert detail["resumed_from"] == failed["id"]
            shown = {t["task_name"]: t for t in detail["task_runs"]}
            assert shown["pay"]["reused_from"] == old["pay"]["id"]
            assert shown["pay"]["reused_from_run"] == failed["id"]
            assert shown["notify"]["reused_from_run"] is None
            # a run is retried once: its retry is the run to retry now (tests/test_run_once.py)
            for params in ({"full": True}, {}):
                again = await client.post(f"/api/flow-runs/{failed['id']}/retry", params=params)
                assert again.status_code == 409 and "retried already" in again.text


async def test_a_bulk_replay_resumes_as_a_retry_does(database_url: str, tmp_path: Path) -> None:
    """`runs replay` ran every task of each run while `runs retry` resumed it."""
    result = await _retry(database_url, tmp_path, bulk=True)
    assert CALLS == {"reserve": 1, "pay": 1, "notify": 2}
    assert result["done"]["resumed_from"] == result["failed"]["id"]
    assert {t["state_name"] for t in result["new"].values()} == {"Reused", "Completed"}


async def test_a_full_bulk_replay_runs_every_task_again_through_the_cli(
    sqlite_url: str, tmp_path: Path
) -> None:
    result = await _retry(sqlite_url, tmp_path, "--full", bulk=True)
    assert CALLS == {"reserve": 2, "pay": 2, "notify": 2}
    assert result["done"]["resumed_from"] is None


async def test_a_full_bulk_replay_runs_every_task_again(sqlite_url: str, tmp_path: Path) -> None:
    with serve(create_app(sqlite_url, worker_lease=3)) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            CALLS.clear()
            BEHAVIOUR.update(fail=True, path="b")
            (tmp_path / "orders.jsonl").write_bytes(orjson.dumps({"id": "o1"}) + b"\n")
            app = App(settings(sqlite_url))
            app.subscribe(JsonlSource(tmp_path / "orders.jsonl", group_id="g"), retry_orders)
            async with serving(app):
                await wait_until(lambda: flow_runs(sqlite_url, state_type="FAILED"), timeout=30)
                BEHAVIOUR.update(fail=False)
                asked = await client.post(
                    "/api/flow-runs/replay", json={"flow_name": "retry-orders", "full": True}
                )
                assert asked.json()["count"] == 1
                [done] = await wait_until(
                    lambda: flow_runs(sqlite_url, state_type="COMPLETED"), timeout=30
                )
    assert CALLS == {"reserve": 2, "pay": 2, "notify": 2}
    assert done["resumed_from"] is None


async def test_a_full_retry_runs_every_task_again(sqlite_url: str, tmp_path: Path) -> None:
    result = await _retry(sqlite_url, tmp_path, "--full")
    assert CALLS == {"reserve": 2, "pay": 2, "notify": 2}
    assert result["done"]["resumed_from"] is None
    assert all(t["reused_from"] is None for t in result["new"].values())


async def test_a_flow_that_takes_another_path_runs_the_rest_fresh(
    sqlite_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="eventflow.engine"):
        result = await _retry(sqlite_url, tmp_path, path="refund")
    # position 0 still matches; at position 1 the flow calls refund where pay was
    assert CALLS == {"reserve": 1, "pay": 1, "refund": 1, "notify": 2}
    new = result["new"]
    assert new["reserve"]["state_name"] == "Reused"
    assert new["refund"]["reused_from"] is None and new["notify"]["reused_from"] is None
    [warning] = [r for r in caplog.records if "took another path" in r.getMessage()]
    assert "task call 1 is refund, where pay was before" in warning.getMessage()
