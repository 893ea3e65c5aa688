"""`sqlite:///:memory:`: an ephemeral store, for direct flow calls and for workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from eventflow import App, Settings, flow
from eventflow._defaults import default_writer, reset_default_writer
from eventflow._ephemeral import ephemeral_url, is_memory_url
from eventflow._settings import normalize_database_url
from eventflow._testing._memory import MemorySource
from eventflow.testing import TestApp
from tests._store import flow_runs, sync

DIRECT_CALL = textwrap.dedent(
    """
    import glob, os, tempfile
    from eventflow import flow, task
    from eventflow._defaults import default_writer

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow
    def compute(x: int) -> int:
        return double(x) + 1

    print(compute(3), compute(4))
    default_writer().flush_blocking(10)
    print(len(glob.glob(os.path.join(tempfile.gettempdir(), "eventflow-memory-*"))))
    """
)


def test_a_direct_flow_call_with_a_memory_url_finishes_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": "sqlite:///:memory:", "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", DIRECT_CALL], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["7 9", "1"]
    assert "unavailable" not in done.stderr
    assert list(tmp_path.glob("eventflow-memory-*")) == []  # gone at exit


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///:memory:", "sqlite://"])
def test_a_direct_flow_call_with_other_spellings_of_memory(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    @flow(name="memory-direct")
    def increment(x: int) -> int:
        return x + 1

    reset_default_writer()
    monkeypatch.setenv("EVENTFLOW_DATABASE_URL", url)
    try:
        state = increment(1, return_state=True)
        default_writer().flush_blocking(10)
        (row,) = sync(flow_runs(url, id=state.run_id))
    finally:
        reset_default_writer()
    assert state.result() == 2 and row["state_type"] == "COMPLETED"


def test_memory_urls_map_to_one_file_per_process_and_others_stay() -> None:
    assert is_memory_url("sqlite:///:memory:") and is_memory_url("sqlite+aiosqlite://")
    assert is_memory_url("sqlite:///:memory:?cache=shared")
    assert not is_memory_url("sqlite:///memory.db") and not is_memory_url("postgresql://h/db")
    one = normalize_database_url("sqlite:///:memory:")
    assert one == normalize_database_url("sqlite+aiosqlite://")
    assert one.startswith("sqlite+aiosqlite:////") and one.endswith("/memory.db")
    assert ephemeral_url("sqlite:///runs.db") == "sqlite:///runs.db"


@pytest.mark.parametrize("writer_process", [False, True])
async def test_a_worker_on_a_memory_url_stores_its_runs(writer_process: bool) -> None:
    """The writer process writes the parent's ephemeral store, not an empty one of its own."""

    name = f"memory-worker-{writer_process}"  # one ephemeral store serves the whole process

    @flow(name=name)
    def echo(id: str) -> str:
        return id

    url = "sqlite:///:memory:"
    settings = Settings(database_url=url, metrics_port=0, writer_process=writer_process)
    source = MemorySource(name, group_id=name)
    app = App(settings)
    app.subscribe(source, echo)
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    try:
        await asyncio.wait_for(app.started.wait(), 30)
        outcomes = [source.append(b'{"id": "%d"}' % i)[1] for i in range(3)]
        assert await asyncio.wait_for(asyncio.gather(*outcomes), 30) == [None] * 3  # all ran
        await app.runners[0].writer.flush()
    finally:
        source.stop_taking()
        stop.set()
        await asyncio.wait_for(serving, 30)
    runs = await flow_runs(url, flow_name=name)
    assert sorted(r["result"] for r in runs) == ['"0"', '"1"', '"2"']


async def test_the_harness_on_a_memory_url() -> None:
    @flow(name="memory-harness")
    def echo(id: str) -> str:
        return id

    source = MemorySource("memory-harness", group_id=None)
    app = App()
    app.subscribe(source, echo)
    async with TestApp(app, database_url="sqlite+aiosqlite:///:memory:") as test:
        run = await test.publish(source, {"id": "m1"})
    assert run.state == "COMPLETED" and run.result == "m1"
