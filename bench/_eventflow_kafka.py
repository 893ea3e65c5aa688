"""The eventflow side of bench/kafka.py, in a fresh interpreter.

    python bench/_eventflow_kafka.py BOOTSTRAP TOPIC COUNT [--partitions N]

Consumes COUNT order events with a two-task flow, every run tracked in a SQLite
store of its own, and prints one JSON line: events/s from the first event to the
last run durable with its offsets, peak RSS, RSS sampled along the way, and the
p50/p99 latency from an event's produce time to its run's end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _kafka_common import Order, fetch_customer, load  # noqa: E402

from connectors.kafka import KafkaSource  # noqa: E402
from eventflow import App, Settings, flow, task  # noqa: E402
from eventflow._store import _schema as schema  # noqa: E402
from eventflow._store._engine import make_engine  # noqa: E402


@task(retries=2)
async def fetch(customer_id: str) -> dict[str, Any]:
    return fetch_customer(customer_id)


@task
async def store(order: Order, customer: dict[str, Any]) -> int:
    return load(order, customer)


@flow(name="bench-orders")
async def process(order: Order) -> int:
    return await store(order, await fetch(order.customer_id))


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def measure(bootstrap: str, topic: str, count: int, max_in_flight: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="eventflow-kbench-"))
    url = f"sqlite:///{workdir / 'bench.db'}"
    settings = Settings.from_env({"EVENTFLOW_DATABASE_URL": url, "EVENTFLOW_LOG_LEVEL": "WARNING"})
    app = App(settings)
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}"),
        process,
        max_in_flight=max_in_flight,
        max_in_flight_per_partition=max_in_flight,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    await app.started.wait()
    runner = app.runners[0]
    while runner.stats.received == 0:  # noqa: ASYNC110 - polls a counter, as the loop below
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    samples: list[tuple[int, float]] = []
    next_sample = 0
    while True:
        committed = sum(state.stored or 0 for state in runner._partitions.values())
        if runner.stats.completed >= next_sample:
            samples.append((runner.stats.completed, round(rss_mb(), 1)))
            next_sample += max(count // 10, 1)
        if committed >= count:
            break
        await asyncio.sleep(0.01)
    seconds = time.perf_counter() - started
    stop.set()
    await serving

    engine = make_engine(url)
    runs = schema.flow_runs
    async with engine.connect() as conn:
        completed = (
            await conn.execute(sa.select(sa.func.count()).where(runs.c.state_type == "COMPLETED"))
        ).scalar_one()
        task_runs = (
            await conn.execute(sa.select(sa.func.count()).select_from(schema.task_runs))
        ).scalar_one()
        latencies = sorted(
            row[0]
            for row in (
                await conn.execute(
                    sa.select(
                        sa.cast(runs.c.ended_at, sa.Float) - sa.cast(runs.c.event_time, sa.Float)
                    ).where(runs.c.event_time.is_not(None))
                )
            ).all()
        )
    await engine.dispose()
    p50 = latencies[len(latencies) // 2] if latencies else None
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else None
    return {
        "impl": "eventflow",
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds, 1),
        "tracked_runs": completed,
        "task_runs": task_runs,
        "latency_p50_s": round(p50, 3) if p50 is not None else None,
        "latency_p99_s": round(p99, 3) if p99 is not None else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rss_samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--max-in-flight", type=int, default=2048)
    args = parser.parse_args()
    os.environ.setdefault("EVENTFLOW_LOG_LEVEL", "WARNING")
    print(
        json.dumps(asyncio.run(measure(args.bootstrap, args.topic, args.count, args.max_in_flight)))
    )


if __name__ == "__main__":
    main()
