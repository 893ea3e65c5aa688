"""Task caching: a result cached by one process is returned in another, until it expires
(separate processes on one store, each store kind)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from eventflow._store import _schema as schema
from tests._services import ROOT
from tests._store import rows


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
