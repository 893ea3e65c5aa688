"""Root cause first: a failed run keeps a bounded traceback, and a flow failed by a task
headlines that task run's own error (not "upstream did not complete") with its id."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx

from eventflow import flow, task
from eventflow._engine import run_flow
from eventflow._server import create_app
from eventflow._store._migrate import upgrade
from eventflow._store._writer import RunWriter
from eventflow._tracebacks import format_traceback
from tests.server._serve import serve


@task
def extract() -> int:
    return 3


@task
def load(rows: int) -> int:
    raise RuntimeError(f"disk full after {rows} rows")


@task
def report(loaded: int) -> None:
    pass


@flow(name="root-cause-upstream")
def upstream_failure() -> None:
    """`load` fails, `report` is NotReady, and its result raises UpstreamFailedError."""
    rows = extract.submit()
    loaded = load.submit(rows)
    report.submit(loaded).result()


@flow(name="root-cause-own")
def own_failure() -> None:
    raise KeyError("customer")


async def _fill(url: str) -> tuple[str, str]:
    await asyncio.to_thread(upgrade, url)
    writer = RunWriter(url, flush_interval=0.01)
    await asyncio.to_thread(writer.start)
    try:
        upstream = await run_flow(upstream_failure, writer)
        own = await run_flow(own_failure, writer)
        await writer.flush()
    finally:
        await asyncio.to_thread(writer.close)
    assert upstream.run_id is not None and own.run_id is not None
    return upstream.run_id, own.run_id


def test_a_flow_failed_by_a_task_headlines_its_error_with_tracebacks(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    upstream_id, own_id = asyncio.run(_fill(url))
    with serve(create_app(url)) as base:
        run = httpx.get(f"{base}/api/flow-runs/{upstream_id}", timeout=10).json()
        listed = httpx.get(f"{base}/api/flow-runs", timeout=10).json()["items"]
        own = httpx.get(f"{base}/api/flow-runs/{own_id}", timeout=10).json()

    tasks = {t["task_name"]: t for t in run["task_runs"]}
    assert run["state_type"] == "FAILED"
    assert run["error"] == "RuntimeError: disk full after 3 rows"
    assert {r["id"]: r["error"] for r in listed}[upstream_id] == run["error"]
    assert run["error_task_run_id"] == tasks["load"]["id"]
    assert tasks["report"]["state_name"] == "NotReady" and tasks["report"]["traceback"] is None
    assert 'raise RuntimeError(f"disk full after {rows} rows")' in tasks["load"]["traceback"]
    assert tasks["load"]["traceback"].rstrip().endswith("RuntimeError: disk full after 3 rows")
    assert "Traceback (most recent call last)" in run["traceback"]
    assert tasks["extract"]["traceback"] is None and tasks["extract"]["error"] is None

    assert own["error"] == "KeyError: 'customer'" and own["error_task_run_id"] is None
    # a run without flow_run_name gets a generated name
    assert all(re.fullmatch(r"[a-z]+-[a-z]+", r["name"]) for r in (run, own))
    assert 'raise KeyError("customer")' in own["traceback"]


def test_a_traceback_is_bounded_and_keeps_its_innermost_frames() -> None:
    try:
        try:
            raise KeyError("k" * 20_000)  # a huge cause in the middle
        except KeyError as cause:
            raise ValueError("the bottom") from cause
    except ValueError as error:
        text = format_traceback(error, limit=5_000)
    assert text is not None and len(text) <= 5_100
    assert text.startswith("Traceback (most recent call last)")
    assert "characters cut" in text and text.rstrip().endswith("ValueError: the bottom")


def test_a_traceback_leaves_out_eventflows_own_frames(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'runs.db'}"
    upstream_id, _own_id = asyncio.run(_fill(url))
    with serve(create_app(url)) as base:
        run = httpx.get(f"{base}/api/flow-runs/{upstream_id}", timeout=10).json()
    (load_run,) = [t for t in run["task_runs"] if t["task_name"] == "load"]
    lines = load_run["traceback"].splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[1].startswith(f'  File "{__file__}", line ') and lines[1].endswith(", in load")
    assert "eventflow/_engine.py" not in load_run["traceback"]
