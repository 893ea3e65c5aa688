"""Benchmark: the store's write path alone, PostgreSQL server CPU per event.

    .venv/bin/python bench/store_writes.py [--events 200000] [--batch 1000] [--revision 0005]
        [--drop-index NAME ...]

Starts a local PostgreSQL server (scripts/postgres.sh), migrates a new database,
then commits batches shaped like the Kafka benchmark's (per event: one final
flow run, two final task runs; per batch: the offsets of 4 partitions) through
the writer's own committer, in this process. Prints events/s and CPU µs per
event of this process (the committer) and of the server (postmaster and
backends), from /proc. `--revision` measures an older schema beside the newest
one, alternating; `--drop-index` measures the schema without an index, to
price each one.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import asyncpg  # noqa: E402
from _proc import CpuWindow, postmaster_pid  # noqa: E402

from eventflow._ids import new_id  # noqa: E402
from eventflow._store._batch import Batch  # noqa: E402
from eventflow._store._committer import LocalCommitter  # noqa: E402
from eventflow._store._migrate import upgrade  # noqa: E402
from eventflow._store._pg_writes import asyncpg_dsn  # noqa: E402
from tests._services import Postgres  # noqa: E402


def event_rows(i: int, now: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    run_id = new_id()
    run = {
        "id": run_id,
        "flow_name": "bench-orders",
        "name": None,
        "state_type": "COMPLETED",
        "state_name": "Completed",
        "parameters": None,
        "result": str(i * 2),
        "error": None,
        "run_count": 1,
        "parent_flow_run_id": None,
        "retry_of": None,
        "worker_id": "bench-worker",
        "event_source": "orders",
        "event_partition": i % 4,
        "event_offset": i // 4,
        "event_id": f"orders/{i % 4}/{i // 4}",
        "event_key": f"c-{i % 100}",
        "event_payload": b'{"id":"o-%d","customer_id":"c-%d","amount":1}' % (i, i % 100),
        "event_time": now - 1,
        "created_at": now,
        "started_at": now,
        "ended_at": now + 0.001,
        "linked_run_id": None,
    }
    tasks = [
        {
            "id": new_id(),
            "flow_run_id": run_id,
            "task_name": name,
            "name": f"{name}-0",
            "state_type": "COMPLETED",
            "state_name": "Completed",
            "run_count": 1,
            "error": None,
            "created_at": now,
            "started_at": now,
            "ended_at": now + 0.0005,
        }
        for name in ("fetch", "store")
    ]
    return run, tasks


def make_batch(start: int, size: int) -> Batch:
    batch = Batch()
    now = time.time()
    for i in range(start, start + size):
        run, tasks = event_rows(i, now)
        batch.flow_runs[run["id"]] = run
        for task in tasks:
            batch.task_runs[task["id"]] = task
    for p in range(4):
        batch.offsets[("bench", "orders", p)] = {
            "group_id": "bench",
            "topic": "orders",
            "partition": p,
            "next_offset": (start + size) // 4,
            "updated_at": now,
        }
    return batch


async def measure(url: str, pid: int, events: int, size: int) -> dict[str, Any]:
    batches = [make_batch(i, size) for i in range(0, events, size)]
    committer = LocalCommitter(url)
    await committer.commit(make_batch(events, 1))  # connect before the clock starts
    cpu = CpuWindow({"committer": ([os.getpid()], False), "postgres": ([pid], True)})
    cpu.start()
    started = time.perf_counter()
    for batch in batches:
        await committer.commit(batch)
    seconds = time.perf_counter() - started
    cpu.stop()
    await committer.close()
    return {"events_per_s": round(events / seconds), **cpu.per_event_us(events)}


async def drop_indexes(url: str, names: list[str]) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        for name in names:
            await conn.execute(f'DROP INDEX "{name}"')
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--drop-index", action="append", default=[])
    parser.add_argument("--revision", help="also measure the schema at this migration")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("PG_SHARED_BUFFERS", "256MB")
    server = Postgres.start_new()
    try:
        pid = postmaster_pid(server.data_dir)
        variants: list[tuple[str, list[str]]] = [("head", [])]
        if args.drop_index:
            variants.append(("head", args.drop_index))
        if args.revision:
            variants.append((args.revision, []))
        for round_ in range(args.rounds):
            for revision, dropped in variants if round_ % 2 == 0 else variants[::-1]:
                url = server.create_database()
                upgrade(url, revision)
                asyncio.run(drop_indexes(url, dropped))
                result = asyncio.run(measure(url, pid, args.events, args.batch))
                label = f"schema {revision}" + (" without " + ",".join(dropped) if dropped else "")
                print(f"round {round_ + 1}, {label}: {result}", flush=True)
    finally:
        server.remove()


if __name__ == "__main__":
    main()
