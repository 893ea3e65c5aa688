"""A batch job (a direct flow call, sync or async) SIGKILLed mid-run (issue 21, line 7).

While a worker runs on the same store, the job's run ends CRASHED within the
lease, as a streaming run's does; running the job again resumes after its
completed tasks (its first task's side effect does not happen twice).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventflow._store import _schema as schema
from tests._kafka import Kafka, create_topic, wait_until
from tests._services import ROOT
from tests._store import flow_runs, rows
from tests.distributed._contract import install_audit
from tests.runtime._workers import Worker

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

LEASE = 5.0
FLOWS = {"sync": "batch-nightly", "async": "batch-nightly-async"}


@pytest.fixture(autouse=True)
def no_worker_outlives_its_test() -> Iterator[None]:
    yield
    Worker.kill_all()


async def start_job(url: str, form: str, workdir: Path) -> asyncio.subprocess.Process:
    """Run the batch job (also: run it again, after a crash)."""
    with (workdir / "job.log").open("ab") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "tests/apps/batch_job.py",
            form,
            str(workdir),
            cwd=ROOT,
            env={**os.environ, "EVENTFLOW_DATABASE_URL": url, "EVENTFLOW_WORKER_LEASE": str(LEASE)},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )


async def _task_state(url: str, name: str) -> str | None:
    found = await rows(url, schema.task_runs, schema.task_runs.c.task_name == name)
    return str(found[-1]["state_type"]) if found else None


@pytest.mark.slow(40)
@pytest.mark.parametrize("form", ["sync", "async"])
async def test_a_killed_batch_job_ends_crashed_and_resumes(
    kafka: Kafka, database_url: str, tmp_path: Path, form: str
) -> None:
    await install_audit(database_url)
    topic = f"idle-{uuid.uuid4().hex[:8]}"
    await create_topic(kafka.bootstrap, topic, 1)
    worker = Worker(
        {
            "EVENTFLOW_DATABASE_URL": database_url,
            "EVENTFLOW_WORKER_LEASE": str(LEASE),
            "EVENTFLOW_METRICS_PORT": "0",
            "BOOTSTRAP": kafka.bootstrap,
            "TOPIC": topic,
            "GROUP": "idle",
        },
        tmp_path / "worker.log",
        app="tests/apps/fence_worker.py:app",
    )
    load = "load" if form == "sync" else "load_async"
    job = await start_job(database_url, form, tmp_path)
    await wait_until(lambda: _task_state(database_url, load), timeout=60, interval=0.1)
    assert await _task_state(database_url, load) == "RUNNING"
    job.kill()
    await job.wait()
    killed_at = time.monotonic()

    # the worker's sweep ends it within the lease (and its sweep period, half a lease)
    (crashed,) = await wait_until(
        lambda: flow_runs(database_url, state_type="CRASHED"), timeout=4 * LEASE, interval=0.2
    )
    took = time.monotonic() - killed_at
    print(f"{form} job on {database_url.split(':')[0]}: CRASHED {took:.1f}s after SIGKILL")
    assert took <= 2 * LEASE + 2
    assert crashed["flow_name"] == FLOWS[form]
    assert worker.alive()

    (tmp_path / "release").touch()
    again = await start_job(database_url, form, tmp_path)
    assert await asyncio.wait_for(again.wait(), 60) == 0, (tmp_path / "job.log").read_text()
    (done,) = await flow_runs(database_url, state_type="COMPLETED")
    assert done["resumed_from"] == crashed["id"]
    # its first task completed before the kill: not called again
    assert (tmp_path / "calls").read_text().split() == ["extract", "load"]
    tasks = {t["task_name"]: t for t in await rows(database_url, schema.task_runs)
             if t["flow_run_id"] == done["id"]}  # fmt: skip
    assert tasks[f"extract{'_async' if form == 'async' else ''}"]["state_name"] == "Reused"
