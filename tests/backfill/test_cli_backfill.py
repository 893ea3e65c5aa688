"""`eventflow backfill` as a user runs it: progress, SIGINT, resume, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson

from eventflow._store._migrate import upgrade
from tests._kafka import wait_until
from tests._store import flow_runs

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))

FLOWS = """
import asyncio
from eventflow import flow

@flow(name="slow-order")
async def slow_order(id: str, amount: int) -> int:
    await asyncio.sleep(0.05)
    return amount
"""


def setup(tmp_path: Path, lines: int) -> tuple[Path, Path]:
    """A flows module and a JSONL file of `lines` orders."""
    flows = tmp_path / "flows.py"
    flows.write_text(FLOWS)
    data = tmp_path / "orders.jsonl"
    data.write_bytes(
        b"".join(orjson.dumps({"id": f"o{n}", "amount": n}) + b"\n" for n in range(1, lines + 1))
    )
    return flows, data


def start(url: str, flows: Path, data: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url, "EVENTFLOW_WORKER_LEASE": "1"}
    # at most 20 runs of 50 ms in flight, about 400 runs/s: slow enough to interrupt
    command = [EVENTFLOW, "backfill", f"{flows}:slow_order", "--jsonl", str(data)]
    with log.open("ab") as out:
        return subprocess.Popen(
            [*command, "--max-in-flight", "20"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def finish(url: str, flows: Path, data: Path) -> subprocess.CompletedProcess[str]:
    """Run the backfill to its end (off the event loop)."""
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": url, "EVENTFLOW_WORKER_LEASE": "1"}
    return await asyncio.to_thread(
        subprocess.run,
        [EVENTFLOW, "backfill", f"{flows}:slow_order", "--jsonl", str(data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def completed_lines(url: str) -> Counter[int]:
    runs = await flow_runs(url, state_type="COMPLETED")
    return Counter(r["event_offset"] for r in runs)


async def test_sigint_stops_gracefully_and_the_same_command_resumes(
    tmp_path: Path, sqlite_url: str
) -> None:
    flows, data = setup(tmp_path, 3000)
    await asyncio.to_thread(upgrade, sqlite_url)  # a store to poll
    log = tmp_path / "first.log"
    process = start(sqlite_url, flows, data, log)
    try:

        async def some_done() -> bool:
            return sum((await completed_lines(sqlite_url)).values()) >= 300

        await wait_until(some_done, timeout=60, interval=0.2)
        process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(process.wait, 60) == 130
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    first = await completed_lines(sqlite_url)
    assert 300 <= sum(first.values()) < 3000
    output = log.read_text()
    assert "interrupted: run it again to resume" in output

    done = await finish(sqlite_url, flows, data)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "3000/3000" in done.stderr  # the progress bar: done/total
    assert "event/s" in done.stderr or "s/event" in done.stderr  # and the rate
    assert f"{sum(first.values())} had run before" in done.stdout
    runs = await flow_runs(sqlite_url)
    assert Counter(r["event_offset"] for r in runs) == Counter(range(1, 3001))  # none twice
    assert {r["state_type"] for r in runs} == {"COMPLETED"}


async def test_after_kill_9_a_resumed_backfill_reruns_only_runs_that_never_finished(
    tmp_path: Path, sqlite_url: str
) -> None:
    flows, data = setup(tmp_path, 3000)
    await asyncio.to_thread(upgrade, sqlite_url)  # a store to poll
    process = start(sqlite_url, flows, data, tmp_path / "killed.log")
    try:

        async def some_done() -> bool:
            return sum((await completed_lines(sqlite_url)).values()) >= 500

        await wait_until(some_done, timeout=60, interval=0.2)
        process.kill()
        await asyncio.to_thread(process.wait, 30)
        killed_at = time.time()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = await completed_lines(sqlite_url)
    # once the dead worker's lease (1 s) lapsed, the next start marks its runs CRASHED
    await wait_until(lambda: time.time() > killed_at + 1.5, timeout=5, interval=0.1)

    done = await finish(sqlite_url, flows, data)
    assert done.returncode == 0, done.stderr + done.stdout
    after = await completed_lines(sqlite_url)
    assert after == Counter(range(1, 3001))  # every line exactly one completed run
    assert set(before) <= set(after)
    runs = await flow_runs(sqlite_url)
    assert {r["state_type"] for r in runs} <= {"COMPLETED", "CRASHED"}
    crashed = {r["event_offset"] for r in runs if r["state_type"] == "CRASHED"}
    assert not crashed & set(before)  # a line that had finished never ran again


def test_a_backfill_needs_exactly_one_input(tmp_path: Path, sqlite_url: str) -> None:
    flows, data = setup(tmp_path, 1)
    env = {**os.environ, "EVENTFLOW_DATABASE_URL": sqlite_url}
    done = subprocess.run(
        [EVENTFLOW, "backfill", f"{flows}:slow_order"], env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "--jsonl FILE or --kafka-topic TOPIC" in done.stderr
    done = subprocess.run(
        [EVENTFLOW, "backfill", f"{flows}:FLOWS_MISSING", "--jsonl", str(data)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "no attribute 'FLOWS_MISSING'" in done.stderr
