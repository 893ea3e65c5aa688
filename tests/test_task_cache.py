"""Task caching: a result cached by one process is returned in another, until it expires
(separate processes on one store, each store kind)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from eventflow import _caching, flow, task, task_input_hash
from eventflow._store import _schema as schema
from tests._services import ROOT
from tests._store import flow_runs, rows, sync


async def run_detail_tasks(url: str, flow_name: str) -> list[dict[str, Any]]:
    """The task runs of the one run of `flow_name`, in call order."""
    [run] = await flow_runs(url, flow_name=flow_name)
    found = await rows(url, schema.task_runs, schema.task_runs.c.flow_run_id == run["id"])
    return sorted(found, key=lambda t: t["position"])


def _quote(url: str, calls: Path, sku: str, cache_seconds: float = 3600) -> int:
    env = {
        **os.environ,
        "EVENTFLOW_DATABASE_URL": url,
        "CALLS": str(calls),
        "CACHE_SECONDS": str(cache_seconds),
    }
    done = subprocess.run(
        [sys.executable, "tests/apps/cached_flow.py", sku],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.split()[-1])


async def _price_runs(url: str) -> list[dict[str, Any]]:
    runs = await rows(url, schema.task_runs, schema.task_runs.c.task_name == "price")
    return sorted(runs, key=lambda r: r["created_at"])


async def test_a_cached_result_is_shared_by_processes_until_it_expires(
    database_url: str, tmp_path: Path
) -> None:
    calls = tmp_path / "calls.txt"
    assert await asyncio.to_thread(_quote, database_url, calls, "abc") == 300
    assert await asyncio.to_thread(_quote, database_url, calls, "abc") == 300  # another process
    assert await asyncio.to_thread(_quote, database_url, calls, "abcd") == 400  # other inputs
    assert calls.read_text().split() == ["abc", "abcd"]
    first, cached, other = await _price_runs(database_url)
    assert (first["state_name"], cached["state_name"], other["state_name"]) == (
        "Completed",
        "Cached",
        "Completed",
    )
    assert cached["state_type"] == "COMPLETED" and cached["reused_from"] == first["id"]
    assert cached["result"] == first["result"]

    # an entry that expires: the next call after its expiry runs the task again
    assert await asyncio.to_thread(_quote, database_url, calls, "xy", 1.0) == 200
    [entry] = await rows(database_url, schema.task_cache, schema.task_cache.c.result.like("%xy%"))
    expires_at = entry["expires_at"].timestamp()
    assert abs(expires_at - entry["created_at"].timestamp() - 1.0) < 0.01
    await asyncio.sleep(max(0.0, expires_at - time.time()) + 0.05)  # the clock must pass it
    assert await asyncio.to_thread(_quote, database_url, calls, "xy") == 200
    assert calls.read_text().split() == ["abc", "abcd", "xy", "xy"]
    assert await asyncio.to_thread(_quote, database_url, calls, "xy") == 200  # cached again
    assert calls.read_text().split().count("xy") == 2


def _task_in_module(module: str, cents: int, **options: Any) -> Any:
    """A task named `lookup` whose function lives in module `module`."""
    namespace: dict[str, Any] = {"__name__": module}
    exec(f"def lookup(sku):\n    return {{'module': {module!r}, 'cents': {cents}}}\n", namespace)
    return task(namespace["lookup"], **options)


def test_task_input_hash_keys_by_the_tasks_identity_not_its_name(any_default_store: str) -> None:
    """Two tasks named `lookup` in two modules: each computes its own result (one returned
    the other's cached result)."""
    shop = _task_in_module("shop.prices", 100, cache_key_fn=task_input_hash)
    stock = _task_in_module("stock.levels", 7, cache_key_fn=task_input_hash)
    assert shop.name == stock.name == "lookup" and shop.key != stock.key

    @flow(name="two-lookups")
    def both(sku: str) -> list[Any]:
        return [shop(sku), stock(sku), shop(sku)]

    assert both("abc") == [
        {"module": "shop.prices", "cents": 100},
        {"module": "stock.levels", "cents": 7},
        {"module": "shop.prices", "cents": 100},  # from the cache
    ]
    states = [t["state_name"] for t in sync(run_detail_tasks(any_default_store, "two-lookups"))]
    assert states == ["Completed", "Completed", "Cached"]


def test_a_key_two_tasks_share_returns_one_result_and_warns_once(
    any_default_store: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys from a `cache_key_fn` are global (Prefect's behaviour, documented): a task
    hitting another task's entry gets its result, and one WARNING says so."""
    monkeypatch.setattr(_caching, "_SHARED_WARNED", set())  # once per process

    @task(cache_key_fn=lambda _context, arguments: f"rate-{arguments['currency']}")
    def exchange_rate(currency: str) -> float:
        return 1.08

    @task(cache_key_fn=lambda _context, arguments: f"rate-{arguments['currency']}")
    def shipping_rate(currency: str) -> float:
        return 4.5

    @flow(name="rates")
    def rates() -> list[float]:
        return [exchange_rate("EUR"), shipping_rate("EUR"), shipping_rate("EUR")]

    with caplog.at_level(logging.WARNING, logger="eventflow.engine"):
        assert rates() == [1.08, 1.08, 1.08]
    warnings = [
        r.getMessage() for r in caplog.records if "cached under the same key" in r.getMessage()
    ]
    here = f"{__name__}.test_a_key_two_tasks_share_returns_one_result_and_warns_once.<locals>"
    assert warnings == [
        f"task {here}.shipping_rate returned the result task {here}.exchange_rate cached"
        " under the same key (cache keys are shared by all tasks): if they must not share"
        " it, put the task in the key (task_input_hash does)"
    ]
