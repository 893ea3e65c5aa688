"""Benchmark: `eventflow run --workers 1` and `--workers 2`, one 8-partition topic, PostgreSQL.

    .venv/bin/python bench/kafka_workers.py [--events 200000] [--rounds 2] [--workers 1,2]

Starts a local broker and PostgreSQL server, fills an 8-partition topic with
order events once, then for each round and worker count (alternating) runs
`eventflow run --workers N bench/_worker_app.py:app` with a fresh consumer
group and a fresh database until every offset is stored. The window starts
when the first run is stored (imports and the group join are left out) and
ends when the stored offsets cover the topic. Prints events/s and the CPU µs
per event of every process, from /proc: the eventflow processes (supervisor,
workers, their writer processes), the PostgreSQL server, the broker, and the
total.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
from _kafka_produce import produce_orders  # noqa: E402
from _proc import CpuWindow, broker_pid, postmaster_pid  # noqa: E402

from eventflow._store._migrate import upgrade  # noqa: E402
from eventflow._store._pg_writes import asyncpg_dsn  # noqa: E402
from tests._kafka import free_port_pair  # noqa: E402
from tests._services import Postgres  # noqa: E402

EVENTFLOW = str(Path(sys.executable).with_name("eventflow"))
PARTITIONS = 8


async def wait_for(conn: asyncpg.Connection, query: str, *args: Any, at_least: int) -> int:
    while True:
        value = int(await conn.fetchval(query, *args) or 0)
        if value >= at_least:
            return value
        await asyncio.sleep(0.05)


async def window(url: str, group: str, events: int, cpu: CpuWindow) -> tuple[float, int, int]:
    """Seconds from the first stored run to every offset stored; runs before; runs completed."""
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        before = await wait_for(conn, "SELECT count(*) FROM flow_runs", at_least=1)
        cpu.start()
        started = time.perf_counter()
        await wait_for(
            conn,
            "SELECT sum(next_offset) FROM consumer_offsets WHERE group_id = $1",
            group,
            at_least=events,
        )
        seconds = time.perf_counter() - started
        cpu.stop()
        completed = await conn.fetchval(
            "SELECT count(*) FROM flow_runs WHERE state_type = 'COMPLETED'"
        )
    finally:
        await conn.close()
    return seconds, before, int(completed)


def measure(
    postgres: Postgres, bootstrap: str, topic: str, events: int, workers: int, broker: int
) -> dict[str, Any]:
    url = postgres.create_database()
    upgrade(url)
    group = f"bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "EVENTFLOW_DATABASE_URL": url,
        "EVENTFLOW_LOG_LEVEL": "WARNING",
        "EVENTFLOW_METRICS_PORT": "0",
        "BOOTSTRAP": bootstrap,
        "TOPIC": topic,
        "GROUP": group,
    }
    supervisor = subprocess.Popen(
        [EVENTFLOW, "run", "--workers", str(workers), "bench/_worker_app.py:app"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    cpu = CpuWindow(
        {
            "eventflow": ([supervisor.pid], True),
            "postgres": ([postmaster_pid(postgres.data_dir)], True),
            "broker": ([broker], False),
        }
    )
    try:
        seconds, before, completed = asyncio.run(window(url, group, events, cpu))
    finally:
        supervisor.send_signal(signal.SIGTERM)
        supervisor.wait(120)
    counted = events - before
    per_event = cpu.per_event_us(counted)
    return {
        "workers": workers,
        "events_per_s": round(counted / seconds),
        "completed": completed,
        **per_event,
        "total": round(sum(per_event.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    counts = [int(n) for n in args.workers.split(",")]

    kafka_dir = tempfile.mkdtemp(prefix="eventflow-wbench-broker-")
    port = free_port_pair()
    bootstrap = f"127.0.0.1:{port}"
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start", kafka_dir, str(port)], check=True)
    os.environ.setdefault("PG_SHARED_BUFFERS", "256MB")
    postgres = Postgres.start_new()
    try:
        topic = f"orders-{uuid.uuid4().hex[:8]}"
        produce_orders(bootstrap, topic, args.events, partitions=PARTITIONS)
        print(f"produced {args.events} orders on {PARTITIONS} partitions", flush=True)
        print("load before:", os.getloadavg(), flush=True)
        results: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
        for round_ in range(args.rounds):
            for n in counts if round_ % 2 == 0 else counts[::-1]:
                result = measure(postgres, bootstrap, topic, args.events, n, broker_pid(kafka_dir))
                results[n].append(result)
                print(f"round {round_ + 1}: {result}", flush=True)
        print("load after:", os.getloadavg(), flush=True)
        print("\nmedians (CPU us per event):")
        print(
            f"{'workers':>7} {'events/s':>9} {'eventflow':>10} {'postgres':>9} {'broker':>7}"
            f" {'total':>7} {'events/s vs 1':>14} {'total vs 1':>11}"
        )
        base = results[counts[0]]
        for n, runs in results.items():
            med = {
                key: statistics.median(r[key] for r in runs)
                for key in ("events_per_s", "eventflow", "postgres", "broker", "total")
            }
            rate = med["events_per_s"] / statistics.median(r["events_per_s"] for r in base)
            total = med["total"] / statistics.median(r["total"] for r in base)
            print(
                f"{n:>7} {med['events_per_s']:>9.0f} {med['eventflow']:>10.1f}"
                f" {med['postgres']:>9.1f} {med['broker']:>7.1f} {med['total']:>7.1f}"
                f" {rate:>13.2f}x {total:>10.2f}x"
            )
    finally:
        subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "stop", kafka_dir], check=False)
        shutil.rmtree(kafka_dir, ignore_errors=True)
        postgres.remove()


if __name__ == "__main__":
    main()
