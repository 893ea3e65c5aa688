"""A batch job (a direct flow call) stopped by SIGTERM or Ctrl-C leaves its run CRASHED,
not RUNNING for ever, so it can be retried (each store kind)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from eventflow._store import _schema as schema
from tests._kafka import wait_until
from tests._services import ROOT
from tests._store import flow_runs, rows


async def _load_running(url: str) -> bool:
    try:
        tasks = await rows(url, schema.task_runs, schema.task_runs.c.task_name == "load")
    except Exception:  # the job has not created the store's tables yet
        return False
    return bool(tasks) and tasks[0]["state_type"] == "RUNNING"


@pytest.mark.parametrize("interrupt", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_an_interrupted_direct_call_ends_crashed(
    database_url: str, tmp_path: Path, interrupt: signal.Signals
) -> None:
    release, log = tmp_path / "release", tmp_path / "job.log"
    with log.open("wb") as output:
        job = await asyncio.create_subprocess_exec(
            sys.executable,
            "tests/apps/interrupted_flow.py",
            str(release),
            cwd=ROOT,
            env={**os.environ, "EVENTFLOW_DATABASE_URL": database_url},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=output,
        )
    try:
        await wait_until(lambda: _load_running(database_url), timeout=60)
        job.send_signal(interrupt)
        (run,) = await wait_until(lambda: flow_runs(database_url, state_type="CRASHED"), timeout=30)
        release.touch()  # after Ctrl-C the interpreter waits for the task's thread
        returncode = await asyncio.wait_for(job.wait(), 30)
    finally:
        if job.returncode is None:
            job.kill()
            await job.wait()
    assert run["flow_name"] == "nightly"
    why = {signal.SIGTERM: "SIGTERM", signal.SIGINT: "KeyboardInterrupt"}[interrupt]
    assert run["error"] == f"the flow run was interrupted: {why}"
    assert run["ended_at"] is not None
    if interrupt is signal.SIGTERM:
        assert returncode == -signal.SIGTERM  # the signal's default action, as without eventflow
        tasks = await rows(database_url, schema.task_runs)
        states = {(t["name"], t["state_type"], t["error"]) for t in tasks}
        # the task in flight ends with its flow run (it runs on a thread of its own)
        assert states == {
            ("extract-0", "COMPLETED", None),
            ("load-0", "CRASHED", "the task run was interrupted: SIGTERM"),
        }
    else:
        assert returncode != 0 and "KeyboardInterrupt" in log.read_text()


async def test_a_second_ctrl_c_ends_a_job_waiting_for_its_task_thread(
    database_url: str, tmp_path: Path
) -> None:
    """After Ctrl-C the interpreter waits for the sync task still on its thread (here up
    to 60 s): the job says so, and a second Ctrl-C ends it at once, its run CRASHED."""
    release, log = tmp_path / "release", tmp_path / "job.log"
    with log.open("wb") as output:
        job = await asyncio.create_subprocess_exec(
            sys.executable,
            "tests/apps/interrupted_flow.py",
            str(release),
            cwd=ROOT,
            env={**os.environ, "EVENTFLOW_DATABASE_URL": database_url},
            stdout=output,  # eventflow's log lines
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_until(lambda: _load_running(database_url), timeout=60)
        job.send_signal(signal.SIGINT)
        await wait_until(lambda: "press Ctrl-C again" in log.read_text(), timeout=30)
        (run,) = await flow_runs(database_url, state_type="CRASHED")  # recorded before it says so
        job.send_signal(signal.SIGINT)  # the task is never released
        returncode = await asyncio.wait_for(job.wait(), 30)
    finally:
        if job.returncode is None:
            job.kill()
            await job.wait()
    assert returncode == 130
    assert run["error"] == "the flow run was interrupted: KeyboardInterrupt"
    said = log.read_text()
    assert "Exception ignored" not in said  # no traceback out of the interpreter's exit
