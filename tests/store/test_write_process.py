"""The writer process of a worker: restarted when it dies, gone when its worker dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from eventflow import Settings
from eventflow._errors import ConfigurationError, StoreError
from eventflow._store import _schema as schema
from eventflow._store._committer import ProcessCommitter
from eventflow._store._migrate import upgrade
from eventflow._store._writer import RunWriter
from tests._kafka import wait_until
from tests._store import rows
from tests.store.test_writer import flow_run


def child_pid(writer: RunWriter) -> int:
    committer = writer._committer
    assert isinstance(committer, ProcessCommitter) and committer.pid is not None
    return committer.pid


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited too
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"


def wait_until_gone(pid: int, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while not gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return gone(pid)


async def test_a_killed_writer_process_is_replaced_and_nothing_is_lost(
    database_url: str,
) -> None:
    upgrade(database_url)
    writer = RunWriter(database_url, flush_interval=0.02, process=True)
    writer.start()
    try:
        writer.put_flow_run(flow_run("before"))
        await writer.flush()
        first = child_pid(writer)
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: gone(first), timeout=15)  # without blocking this loop

        writer.put_flow_run(flow_run("after"))
        writer.put_offsets("g", [("orders", 0, 2)])
        await writer.flush()  # the batch failed once (transient) and was written again
        assert child_pid(writer) != first
        assert writer.stats.failures >= 1 and writer.healthy
        assert sorted(r["id"] for r in await rows(database_url, schema.flow_runs)) == [
            "after",
            "before",
        ]
        (offset,) = await rows(database_url, schema.consumer_offsets)
        assert offset["next_offset"] == 2
    finally:
        writer.close()


async def test_the_writer_process_ignores_sigint_and_stops_with_the_writer(
    sqlite_url: str,
) -> None:
    """Ctrl-C reaches the whole process group: the worker, not the child, decides to stop."""
    upgrade(sqlite_url)
    writer = RunWriter(sqlite_url, flush_interval=0.02, process=True)
    writer.start()
    writer.put_flow_run(flow_run("r1"))
    await writer.flush()
    pid = child_pid(writer)
    os.kill(pid, signal.SIGINT)
    writer.put_flow_run(flow_run("r2"))
    await writer.flush()
    assert child_pid(writer) == pid and writer.stats.failures == 0
    writer.close()
    assert gone(pid)  # close() reaped it
    assert len(await rows(sqlite_url, schema.flow_runs)) == 2


def test_the_writer_process_exits_when_its_worker_is_killed(
    sqlite_url: str, tmp_path: Path
) -> None:
    upgrade(sqlite_url)
    script = tmp_path / "worker.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys, threading
            from eventflow._store._writer import RunWriter
            from tests.store.test_writer import flow_run
            writer = RunWriter({sqlite_url!r}, process=True)
            writer.start()
            writer.put_flow_run(flow_run("r1"))
            writer.flush_blocking(timeout=30)
            print(writer._committer.pid, flush=True)
            threading.Event().wait()
            """
        )
    )
    with subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    ) as worker:
        try:
            assert worker.stdout is not None
            pid = int(worker.stdout.readline())
            assert not gone(pid)
            worker.kill()
            worker.wait(10)
            assert wait_until_gone(pid), "the writer process outlived its worker"
        finally:
            worker.kill()


def test_workers_write_from_a_process_unless_told_otherwise() -> None:
    assert Settings.from_env({}).writer_process is True
    assert Settings.from_env({"EVENTFLOW_WRITER_PROCESS": "0"}).writer_process is False
    assert Settings.from_env({"EVENTFLOW_WRITER_PROCESS": "true"}).writer_process is True
    with pytest.raises(ConfigurationError, match="EVENTFLOW_WRITER_PROCESS must be 1 or 0"):
        Settings.from_env({"EVENTFLOW_WRITER_PROCESS": "maybe"})


def _refuse() -> None:
    raise ValueError("this value cannot be read back")


class Unreadable:
    """Pickles, but the writer process cannot unpickle it (nor sqlite3 store it)."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse, ())


class ChildKiller:
    """Unpickling it ends the writer process, every time."""

    def __reduce__(self) -> tuple[object, tuple[int]]:
        return (os._exit, (7,))


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
async def test_a_value_the_store_cannot_take_is_dropped_alone(
    sqlite_url: str, process: bool
) -> None:
    upgrade(sqlite_url)
    writer = RunWriter(sqlite_url, flush_interval=0.02, process=process)
    writer.start()
    try:
        writer.put_flow_run(flow_run("good-1"))
        writer.put_flow_run(flow_run("bad", result=Unreadable()))
        writer.put_flow_run(flow_run("good-2"))
        writer.put_offsets("g", [("orders", 0, 3)])
        await asyncio.wait_for(writer.flush(), 30)  # salvaged record by record, no retry loop
        stored = sorted(r["id"] for r in await rows(sqlite_url, schema.flow_runs))
        assert stored == ["good-1", "good-2"]
        assert writer.stats.dropped == 1 and writer.healthy
        (offset,) = await rows(sqlite_url, schema.consumer_offsets)
        assert offset["next_offset"] == 3
    finally:
        writer.close()


async def test_a_record_that_kills_the_writer_process_is_dropped_and_the_rest_stored(
    sqlite_url: str,
) -> None:
    upgrade(sqlite_url)
    writer = RunWriter(sqlite_url, flush_interval=0.02, process=True)
    writer.start()
    try:
        writer.put_flow_run(flow_run("good-1"))
        writer.put_flow_run(flow_run("killer", result=ChildKiller()))
        writer.put_flow_run(flow_run("good-2"))
        await asyncio.wait_for(writer.flush(), 60)
        stored = sorted(r["id"] for r in await rows(sqlite_url, schema.flow_runs))
        assert stored == ["good-1", "good-2"]
        assert writer.stats.dropped == 1
        writer.put_flow_run(flow_run("after"))  # a new writer process took over
        await asyncio.wait_for(writer.flush(), 30)
        assert len(await rows(sqlite_url, schema.flow_runs)) == 3 and writer.healthy
    finally:
        writer.close()


def test_a_writer_process_that_cannot_start_fails_the_start() -> None:
    writer = RunWriter("nosuchdatabase://nowhere", process=True)
    with pytest.raises(StoreError, match="the writer process did not start"):
        writer.start()
