"""Retention can delete a run that a kept run links to (`resumed_from`, `reused_from`,
`retry_of`): the API says which links are pruned, for the UI to show "pruned" rather
than a link to a page that is gone."""

from __future__ import annotations

import asyncio

import httpx

from eventflow._server import create_app
from eventflow._store import _schema as schema
from eventflow._store._operator import OperatorStore
from tests._store import flow_runs, rows
from tests.server._data import resumed_etl
from tests.server._serve import serve


async def _prune_runs_of(url: str, run_id: str) -> int:
    """Prune what was created before run `run_id` ended (it and its subflow runs)."""
    [run] = await flow_runs(url, id=run_id)
    store = OperatorStore(url)
    try:
        return await store.prune(run["ended_at"].timestamp())
    finally:
        await store.close()


def test_links_to_pruned_runs_are_said_to_be_pruned(database_url: str) -> None:
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
    assert after["resumed_from"] == first  # the link is kept, and said to be pruned
    assert set(after["pruned"]) == {first} | reused
    assert {t["reused_from_run"] for t in after["task_runs"]} == {None}
