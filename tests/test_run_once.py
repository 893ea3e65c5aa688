"""Work runs once through every operator's door (the CLI, the API, the UI's buttons), with
a real worker over each store and a side-effect counter (a payment task's charges):

- a run retried once is not retried again (a second retry ran its tasks again: charged twice);
- a bulk replay leaves out the "Abandoned" records of events that waited for a flow control
  when their worker stopped (their source delivered them again: they ran twice).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from connectors.jsonl import JsonlSource
from eventflow import App, flow, task
from eventflow._server import create_app
from tests._kafka import wait_until
from tests._store import flow_runs
from tests.connectors._app import serving, settings
from tests.runtime._workers import EVENTFLOW
from tests.server._serve import serve
from tests.server.test_ui import browser, click, css, text, wait  # noqa: F401 (a fixture)

CHARGES: Counter[str] = Counter()
"""Charges made, by order id: the side effect that must happen once per order."""
DECLINE: set[str] = set()
"""Orders whose charge fails (the card network is down)."""
HOLD: dict[str, asyncio.Event] = {}
"""Orders whose charge waits for the event before it charges."""

DOORS = ["cli", "api", "ui"]


@task
def reserve(id: str) -> str:
    return f"r-{id}"


@task
async def charge(reservation: str) -> int:
    order = reservation.removeprefix("r-")
    if order in HOLD:
        await HOLD[order].wait()
    if order in DECLINE:
        raise RuntimeError("card network down")
    CHARGES[order] += 1
    return 42


@flow(name="pay-once")
def pay_once(id: str) -> int:
    return charge(reserve(id))


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url}
    return subprocess.run([EVENTFLOW, *args], capture_output=True, text=True, env=env, timeout=60)


def _app(url: str, orders: Path, **options: Any) -> App:
    app = App(settings(url))
    app.subscribe(JsonlSource(orders, group_id="g"), pay_once, on_failure="skip", **options)
    return app


def _orders(tmp_path: Path, *ids: str) -> Path:
    path = tmp_path / "orders.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"id": i}) + b"\n" for i in ids))
    return path


@pytest.fixture(autouse=True)
def _clean() -> None:
    CHARGES.clear()
    DECLINE.clear()
    HOLD.clear()


@contextmanager
def _server(url: str) -> Iterator[str]:
    with serve(create_app(url, worker_lease=3)) as base:
        yield base


async def _retried(url: str) -> list[dict[str, Any]]:
    return [r for r in await flow_runs(url) if r["retry_of"] is not None]


# -- a run is retried once -------------------------------------------------------------------


async def _retry_twice(
    url: str, tmp_path: Path, door: Callable[[str], Awaitable[str | None]]
) -> None:
    """Fail an order's charge, retry its run through `door` (which says why a second
    retry is refused, or returns None if it was accepted); one charge in all."""
    DECLINE.add("o1")
    orders = _orders(tmp_path, "o1")
    async with serving(_app(url, orders)):
        [failed] = await wait_until(lambda: flow_runs(url, state_type="FAILED"), timeout=30)
        DECLINE.clear()
        refusal = await door(failed["id"])
        [done] = await wait_until(lambda: flow_runs(url, state_type="COMPLETED"), timeout=30)
        assert done["retry_of"] == failed["id"] and CHARGES == {"o1": 1}
        second = await door(failed["id"])
        # the old code accepted it and charged o1 again
        assert refusal is None and second is not None
        assert f"retried already as run {done['id']}, which completed" in second
        assert [r["id"] for r in await _retried(url)] == [done["id"]]
    assert CHARGES == {"o1": 1}


async def test_a_run_is_retried_once_through_the_cli(database_url: str, tmp_path: Path) -> None:
    async def door(run_id: str) -> str | None:
        done = await asyncio.to_thread(_cli, database_url, "runs", "retry", run_id)
        return None if done.returncode == 0 else done.stderr

    await _retry_twice(database_url, tmp_path, door)


async def test_a_run_is_retried_once_through_the_api(database_url: str, tmp_path: Path) -> None:
    url = database_url
    with _server(url) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def door(run_id: str) -> str | None:
                answer = await client.post(f"/api/flow-runs/{run_id}/retry")
                if answer.status_code == 201:
                    return None
                assert answer.status_code == 409, answer.text
                return str(answer.json()["detail"])

            await _retry_twice(url, tmp_path, door)
            # a full re-run is a retry too: refused likewise
            [failed] = await flow_runs(url, state_type="FAILED")
            full = await client.post(f"/api/flow-runs/{failed['id']}/retry", params={"full": True})
            assert full.status_code == 409
            # the run's page says why, for the UI to show instead of a Retry button
            detail = (await client.get(f"/api/flow-runs/{failed['id']}")).json()
            assert "which completed" in detail["retry_refused"]


def _ui_retry(driver: WebDriver, base: str, run_id: str) -> str | None:
    """Click Retry on the run's page (None), or read why the page shows no Retry button."""
    driver.get("about:blank")  # a fresh page, not the one a retry was asked from
    driver.get(f"{base}/#/runs/{run_id}")
    wait(driver, lambda d: css(d, "#retry-button") or css(d, "#retry-refused"))
    if css(driver, "#retry-button"):
        click(driver, "#retry-button")
        wait(driver, lambda d: text(d, "#retry-link"))
        return None
    assert not css(driver, "#full-retry-button")
    return text(driver, "#retry-refused")


async def test_a_run_is_retried_once_through_the_ui(
    browser: WebDriver,  # noqa: F811 (the fixture of tests/server/test_ui.py)
    database_url: str,
    tmp_path: Path,
) -> None:
    with _server(database_url) as base:

        async def door(run_id: str) -> str | None:
            return await asyncio.to_thread(_ui_retry, browser, base, run_id)

        await _retry_twice(database_url, tmp_path, door)


# -- a bulk replay leaves out the events abandoned while they waited ---------------------------


async def _abandon_and_replay(url: str, tmp_path: Path, door: Callable[[], Awaitable[int]]) -> None:
    """Orders a (held), b and c (waiting for a's concurrency slot when the worker stops:
    Abandoned), then a restart runs b and c again from the source (c declined); a
    bulk replay through `door` (which returns how many runs it asked for) replays only
    c's failed run: one charge per order."""
    orders = _orders(tmp_path, "a", "b", "c")
    HOLD["a"] = asyncio.Event()
    app = _app(url, orders, concurrency=1)
    stop = asyncio.Event()
    serving_task = asyncio.create_task(app.serve(stop))
    await asyncio.wait_for(app.started.wait(), 60)
    await wait_until(lambda: _named(url, "AwaitingConcurrency", 2), timeout=30)
    stop.set()  # b and c stop waiting; a's run is drained once it is let go
    abandoned = await wait_until(lambda: _named(url, "Abandoned", 2), timeout=30)
    HOLD["a"].set()
    await asyncio.wait_for(serving_task, 60)
    assert {r["state_type"] for r in abandoned} == {"CRASHED"}
    assert CHARGES == {"a": 1}

    DECLINE.add("c")  # the restart reads b and c again: b is charged, c declined
    async with serving(_app(url, orders, concurrency=1)):
        await wait_until(lambda: _ended(url, {2: "COMPLETED", 3: "FAILED"}), timeout=30)
    assert CHARGES == {"a": 1, "b": 1}

    DECLINE.clear()
    async with serving(_app(url, orders)):
        asked = await door()
        assert asked == 1  # c's failed run; the old code asked for b's and c's records too
        await wait_until(lambda: _replays_done(url), timeout=30)
    assert CHARGES == {"a": 1, "b": 1, "c": 1}


async def _ended(url: str, wanted: dict[int, str]) -> bool:
    """Whether each line (offset) has a run in the wanted state."""
    found = {(r["event_offset"], r["state_type"]) for r in await flow_runs(url)}
    return all((offset, state) in found for offset, state in wanted.items())


async def _named(url: str, state_name: str, count: int) -> list[dict[str, Any]] | None:
    found = await flow_runs(url, state_name=state_name)
    return found if len(found) == count else None


async def _replays_done(url: str) -> bool:
    replays = await _retried(url)
    return bool(replays) and all(r["state_type"] == "COMPLETED" for r in replays)


async def test_a_bulk_replay_leaves_out_abandoned_events_through_the_cli(
    database_url: str, tmp_path: Path
) -> None:
    async def door() -> int:
        done = await asyncio.to_thread(
            _cli, database_url, "runs", "replay", "--flow", "pay-once", "--json"
        )
        assert done.returncode == 0, done.stderr
        return len(orjson.loads(done.stdout))

    await _abandon_and_replay(database_url, tmp_path, door)
    # the records left out are counted, and said to be so
    done = await asyncio.to_thread(_cli, database_url, "runs", "replay", "--flow", "pay-once")
    assert "0 runs will be replayed" in done.stdout
    assert "left out 2 records that cannot be retried" in done.stdout


async def test_a_bulk_replay_leaves_out_abandoned_events_through_the_api(
    database_url: str, tmp_path: Path
) -> None:
    with _server(database_url) as base:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:

            async def door() -> int:
                answer = await client.post("/api/flow-runs/replay", json={"flow_name": "pay-once"})
                assert answer.status_code == 201, answer.text
                return int(answer.json()["count"])

            await _abandon_and_replay(database_url, tmp_path, door)
            # nor is one retried alone: its redelivery is its run
            [record, _] = await flow_runs(database_url, state_name="Abandoned")
            refused = await client.post(f"/api/flow-runs/{record['id']}/retry")
            assert refused.status_code == 409
            assert "delivered it again" in refused.json()["detail"]
    assert CHARGES == {"a": 1, "b": 1, "c": 1}


def _ui_replay(driver: WebDriver, base: str) -> int:
    """Click the flow page's "Replay failed runs in this range"; how many it asked for."""
    driver.get("about:blank")
    driver.get(f"{base}/#/flows/pay-once")
    wait(driver, lambda d: css(d, "#throughput-chart"))  # its content is in: nothing moves
    click(driver, "#replay-failed")
    wait(driver, lambda d: text(d, "#replay-notice"))
    said = text(driver, "#replay-notice") or ""
    assert said.endswith(" failed or crashed run(s) asked to run again."), said
    return int(said.split()[0])


async def test_a_bulk_replay_leaves_out_abandoned_events_through_the_ui(
    browser: WebDriver,  # noqa: F811 (the fixture of tests/server/test_ui.py)
    database_url: str,
    tmp_path: Path,
) -> None:
    with _server(database_url) as base:

        async def door() -> int:
            return await asyncio.to_thread(_ui_replay, browser, base)

        await _abandon_and_replay(database_url, tmp_path, door)
        # an Abandoned record's page has no Retry button, and says why
        [record, _] = await flow_runs(database_url, state_name="Abandoned")
        refusal = await asyncio.to_thread(_ui_retry, browser, base, record["id"])
    assert refusal is not None and "its source delivered it again" in refusal
