"""What the run page shows instead of a dead end: retention can delete a run that a kept
run links to (`resumed_from`, `reused_from`, `retry_of`), and the API says which links are
pruned, for the UI to show "pruned" rather than a link to a page that is gone; a record the
server refuses to retry shows why, not a Retry button (Chromium)."""

from __future__ import annotations

import asyncio
import time

import httpx
from selenium.webdriver.remote.webdriver import WebDriver

from eventflow._server import create_app
from eventflow._store import _schema as schema
from eventflow._store._operator import OperatorStore
from eventflow._store._writer import RunWriter
from tests._store import flow_runs, rows
from tests.server._data import resumed_etl
from tests.server._serve import serve
from tests.server.conftest import Store
from tests.server.test_ui import browser, css, text, wait  # noqa: F401 (a fixture)


async def _prune_runs_of(url: str, run_id: str) -> int:
    """Prune what was created before run `run_id` ended (it and its subflow runs)."""
    [run] = await flow_runs(url, id=run_id)
    store = OperatorStore(url)
    try:
        return await store.prune(run["ended_at"].timestamp())
    finally:
        await store.close()


def test_links_to_pruned_runs_are_said_to_be_pruned(
    browser: WebDriver,  # noqa: F811 (the fixture of tests/server/test_ui.py)
    database_url: str,
) -> None:
    first, resumed = resumed_etl(database_url)
    reused = {
        t["reused_from"]
        for t in asyncio.run(
            rows(database_url, schema.task_runs, schema.task_runs.c.flow_run_id == resumed)
        )
    }
    with serve(create_app(database_url)) as base, httpx.Client(base_url=base) as client:
        before = client.get(f"/api/flow-runs/{resumed}").json()
        assert before["resumed_from"] == first and before["pruned"] == []
        assert asyncio.run(_prune_runs_of(database_url, first)) >= 1  # and its subflow runs
        after = client.get(f"/api/flow-runs/{resumed}").json()
        browser.get(f"{base}/#/runs/{resumed}")
        wait(browser, lambda d: len(css(d, "#task-table .reused-from-pruned")) == len(reused))
        assert text(browser, "#resumed-from") == f"{first[-8:]} (pruned)"
        assert not css(browser, "a#resumed-from") and not css(browser, "#task-table a.reused-from")
    assert after["resumed_from"] == first  # the link is kept, and said to be pruned
    assert set(after["pruned"]) == {first} | reused
    assert {t["reused_from_run"] for t in after["task_runs"]} == {None}


def test_a_record_the_server_refuses_to_retry_shows_why_not_a_button(
    browser: WebDriver,  # noqa: F811 (the fixture of tests/server/test_ui.py)
    fresh_store: Store,
) -> None:
    """A Duplicate is CANCELLED, a state that can be retried: the page offered Retry, and
    the click failed with the server's 409."""
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
    with serve(create_app(fresh_store.url)) as base:
        browser.get(f"{base}/#/runs/duplicate-run")
        wait(browser, lambda d: text(d, "#retry-refused"))
        assert not css(browser, "#retry-button") and not css(browser, "#full-retry-button")
        said = text(browser, "#retry-refused") or ""
        assert said == (
            f"No retry: flow run duplicate-run is a Duplicate of run {original}, which"
            " completed its idempotency key: it has nothing to run."
        )
        assert css(browser, "a#linked-run")  # the run it defers to is kept: a link
