"""The eventflow side of bench/core.py, run in a fresh interpreter (argv: runs concurrency mode).

The same workload as `_baselines/prefect_core.py`: a flow with two tasks, one of
them with retries configured, every flow run and task run stored in SQLite.
Prints one JSON line.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

workdir = Path(tempfile.mkdtemp(prefix="eventflow-bench-"))
atexit.register(shutil.rmtree, workdir, ignore_errors=True)
os.environ["EVENTFLOW_DATABASE_URL"] = f"sqlite:///{workdir / 'bench.db'}"

from eventflow import flow, task  # noqa: E402
from eventflow._defaults import default_writer  # noqa: E402
from tests._store import flow_runs, rows  # noqa: E402


@task(retries=2, retry_delay_seconds=0)
async def fetch(i: int) -> dict[str, int]:
    return {"id": i, "amount": i % 100}


@task
async def load(order: dict[str, int]) -> int:
    return order["amount"] * 2


@flow
async def process(i: int) -> int:
    order = await fetch(i)
    return await load(order)


@task(retries=2, retry_delay_seconds=0)
def fetch_sync(i: int) -> dict[str, int]:
    return {"id": i, "amount": i % 100}


@task
def load_sync(order: dict[str, int]) -> int:
    return order["amount"] * 2


@flow
def process_sync(i: int) -> int:
    return load_sync(fetch_sync(i))


async def run_async(runs: int, concurrency: int) -> None:
    numbers = iter(range(runs))

    async def worker() -> None:
        for i in numbers:
            assert await process(i) == (i % 100) * 2

    await asyncio.gather(*(worker() for _ in range(concurrency)))


def main() -> None:
    runs, concurrency, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if mode == "async":
        asyncio.run(process(-1))  # warm-up: migrations, writer thread
        started = time.perf_counter()
        asyncio.run(run_async(runs, concurrency))
    else:
        process_sync(-1)
        started = time.perf_counter()
        for i in range(runs):
            process_sync(i)
    seconds = time.perf_counter() - started
    default_writer().flush_blocking()
    url = os.environ["EVENTFLOW_DATABASE_URL"].replace("sqlite:", "sqlite+aiosqlite:")
    from eventflow._store import _schema as schema

    tracked = len(asyncio.run(flow_runs(url, state_type="COMPLETED"))) - 1
    task_runs = len(asyncio.run(rows(url, schema.task_runs))) - 2
    print(
        json.dumps(
            {
                "impl": "eventflow",
                "mode": mode,
                "runs": runs,
                "concurrency": concurrency,
                "seconds": round(seconds, 3),
                "runs_per_s": round(runs / seconds, 1),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "tracked": tracked,
                "task_runs": task_runs,
            }
        )
    )


if __name__ == "__main__":
    main()
