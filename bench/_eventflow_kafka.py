"""The eventflow side of bench/kafka.py, in a fresh interpreter.

    python bench/_eventflow_kafka.py BOOTSTRAP TOPIC COUNT [--control NAME]
        [--database-url URL] [--watch NAME=PID] [--watch-tree NAME=PID]

Consumes COUNT order events with a two-task flow, every run tracked in a store
(a SQLite file of its own, or `--database-url`, an empty PostgreSQL database),
and prints one JSON line: events/s from the first event to the last run durable
with its offsets, peak RSS, RSS sampled along the way (both of the worker plus
its writer process), the p50/p99 latency from an event's produce time to its
run's end, and CPU µs per event over the same window for the worker, its writer
process and each `--watch` process (`--watch-tree`: with its descendants, as a
PostgreSQL server's backends). `--control` subscribes with one flow control
(see CONTROLS) to measure what it costs.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from _kafka_common import Order, fetch_customer, load  # noqa: E402
from _kafka_produce import create_topic  # noqa: E402
from _proc import CpuWindow, peak_rss_mb, rss_mb  # noqa: E402

from connectors.kafka import KafkaSink, KafkaSource  # noqa: E402
from eventflow import App, Settings, flow, task  # noqa: E402
from eventflow._runtime._app import tune_worker_process  # noqa: E402
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


@flow(name="bench-orders-batched")
async def process_batch(orders: list[Order]) -> int:
    """The same two tasks per order, for a batch of orders in one flow run."""
    customers = [fetch.submit(order.customer_id) for order in orders]
    total = 0
    for order, customer in zip(orders, customers, strict=True):
        total += await store(order, await customer)
    return total


OUT: list[KafkaSink] = []
"""The output topic's sink of the `publish` and `send` variants (made by `measure`)."""


@flow(name="bench-orders-publish")
async def process_publish(order: Order) -> int:
    """The same two tasks, and one message per event published exactly once."""
    amount = await store(order, await fetch(order.customer_id))
    OUT[0].publish(orjson.dumps({"id": order.id, "amount": amount}), key=order.id.encode())
    return amount


@task
async def send_out(order: Order, amount: int) -> None:
    await OUT[0].send(orjson.dumps({"id": order.id, "amount": amount}), key=order.id.encode())


@flow(name="bench-orders-send")
async def process_send(order: Order) -> int:
    """The same two tasks, and one message per event sent at least once (`send`)."""
    amount = await store(order, await fetch(order.customer_id))
    await send_out(order, amount)
    return amount


VARIANTS = {"publish": process_publish, "send": process_send}
"""Flows that publish one message per event to `<topic>.out`, by `--control`."""


CONTROLS: dict[str, dict[str, Any]] = {
    "none": {},
    "publish": {},
    "send": {},
    "concurrency": {"concurrency": 64},
    "concurrency_key": {"concurrency": 1, "concurrency_key": "customer_id"},
    "rate_limit": {"rate_limit": "1000000/s", "rate_limit_key": "customer_id"},
    "priority": {"concurrency": 64, "priority": "amount"},
    "idempotency": {"idempotency_key": "id", "idempotency_window": timedelta(hours=1)},
    "debounce": {"debounce": timedelta(milliseconds=50), "debounce_key": "id"},
    "batch": {"batch_size": 100, "batch_timeout": 0.2},
    "singleton": {"singleton_key": "id"},
    "cancel_on": {"cancel_on": "cancel", "cancel_key": "customer_id"},
}
"""Subscription options per `--control`: limits that rarely bind, to measure the bookkeeping."""


def writer_pid(runner: Any) -> int | None:
    """The worker's writer process (it writes the runs; its memory counts too)."""
    return getattr(getattr(runner.writer, "_committer", None), "pid", None)


def worker_rss_mb(runner: Any) -> float:
    """The worker's resident memory: its own and its writer process's."""
    child = writer_pid(runner)
    return rss_mb() + (rss_mb(child) if child is not None else 0.0)


async def measure(
    bootstrap: str,
    topic: str,
    count: int,
    max_in_flight: int,
    control: str = "none",
    database_url: str | None = None,
    watch: dict[str, tuple[list[int], bool]] | None = None,
) -> dict[str, Any]:
    workdir = None
    if database_url is None:
        workdir = Path(tempfile.mkdtemp(prefix="eventflow-kbench-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
        database_url = f"sqlite:///{workdir / 'bench.db'}"
    url = database_url
    settings = Settings.from_env(
        {
            "EVENTFLOW_DATABASE_URL": url,
            "EVENTFLOW_LOG_LEVEL": "WARNING",
            # EVENTFLOW_WRITER_PROCESS=0 measures the writer thread instead
            "EVENTFLOW_WRITER_PROCESS": os.environ.get("EVENTFLOW_WRITER_PROCESS", "1"),
            # EVENTFLOW_PERSIST_RESULTS=0 measures without task results kept (bench/kafka.py)
            "EVENTFLOW_PERSIST_RESULTS": os.environ.get("EVENTFLOW_PERSIST_RESULTS", "1"),
        }
    )
    app = App(settings)
    if control in VARIANTS:
        out_topic = f"{topic}.out-{uuid.uuid4().hex[:8]}"
        await create_topic(bootstrap, out_topic, 8)
        OUT[:] = [KafkaSink(out_topic, bootstrap_servers=bootstrap)]
    flow_of = VARIANTS.get(control, process_batch if control == "batch" else process)
    app.subscribe(
        KafkaSource(topic, bootstrap_servers=bootstrap, group_id=f"bench-{uuid.uuid4().hex[:8]}"),
        flow_of,
        max_in_flight=max_in_flight,
        max_in_flight_per_partition=max_in_flight,
        **CONTROLS[control],
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(stop))
    await app.started.wait()
    runner = app.runners[0]
    child = writer_pid(runner)
    cpu = CpuWindow(
        {
            "worker": ([os.getpid()], False),
            "writer": ([child] if child is not None else [], False),
            **(watch or {}),
        }
    )
    while runner.stats.received == 0:  # noqa: ASYNC110 - polls a counter, as the loop below
        await asyncio.sleep(0.001)
    started = time.perf_counter()
    cpu.start()
    samples: list[tuple[int, float]] = []
    next_sample = 0
    while True:
        committed = sum(runner.stored_offsets().values())
        if runner.stats.completed >= next_sample:
            samples.append((runner.stats.completed, round(worker_rss_mb(runner), 1)))
            next_sample += max(count // 10, 1)
        if committed >= count:
            break
        await asyncio.sleep(0.01)
    if control == "publish":  # done once the last message is published, not only stored
        await _outbox_drained(url)
    seconds = time.perf_counter() - started
    cpu.stop()
    writer_peak = peak_rss_mb(child) if child is not None else 0.0
    stop.set()
    await serving

    engine = make_engine(url)
    runs = schema.flow_runs
    if engine.dialect.name == "postgresql":
        latency = sa.extract("epoch", runs.c.ended_at - runs.c.event_time)
    else:
        latency = sa.cast(runs.c.ended_at, sa.Float) - sa.cast(runs.c.event_time, sa.Float)
    async with engine.connect() as conn:
        completed = (
            await conn.execute(
                sa.select(sa.func.count()).where(
                    runs.c.state_type == "COMPLETED", runs.c.event_id.is_not(None)
                )
            )
        ).scalar_one()
        task_runs = (
            await conn.execute(sa.select(sa.func.count()).select_from(schema.task_runs))
        ).scalar_one()
        latencies = sorted(
            float(row[0])
            for row in (
                await conn.execute(sa.select(latency).where(runs.c.event_time.is_not(None)))
            ).all()
        )
    await engine.dispose()
    if workdir is not None:  # a bench store is ~100 MB per 100,000 runs: not kept in /tmp
        shutil.rmtree(workdir, ignore_errors=True)
    p50 = latencies[len(latencies) // 2] if latencies else None
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else None
    return {
        "impl": "eventflow" if control == "none" else f"ef+{control}",
        "store": engine.dialect.name,
        "events": count,
        "seconds": round(seconds, 3),
        "events_per_s": round(count / seconds, 1),
        "tracked_runs": completed,
        "task_runs": task_runs,
        "latency_p50_s": round(p50, 3) if p50 is not None else None,
        "latency_p99_s": round(p99, 3) if p99 is not None else None,
        # the worker and its writer process together (each one's own peak)
        "peak_rss_mb": round(peak_rss_mb() + writer_peak, 1),
        "writer_peak_rss_mb": round(writer_peak, 1),
        "rss_samples": samples,
        "cpu_us_per_event": cpu.per_event_us(count),
    }


async def _outbox_drained(url: str) -> None:
    engine = make_engine(url)
    outbox = schema.outbox
    query = sa.select(sa.func.count()).where(outbox.c.published_at.is_(None))
    try:
        while True:
            async with engine.connect() as conn:
                if (await conn.execute(query)).scalar_one() == 0:
                    return
            await asyncio.sleep(0.01)
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--max-in-flight", type=int, default=2048)
    parser.add_argument("--control", choices=sorted(CONTROLS), default="none")
    parser.add_argument("--database-url", help="an empty database (default: a new SQLite file)")
    parser.add_argument("--watch", action="append", default=[], metavar="NAME=PID")
    parser.add_argument("--watch-tree", action="append", default=[], metavar="NAME=PID")
    args = parser.parse_args()
    watch: dict[str, tuple[list[int], bool]] = {}
    for spec, descendants in [(w, False) for w in args.watch] + [
        (w, True) for w in args.watch_tree
    ]:
        name, pid = spec.split("=", 1)
        watch[name] = ([int(pid)], descendants)
    os.environ.setdefault("EVENTFLOW_LOG_LEVEL", "WARNING")
    tune_worker_process()  # as App.run() does in a worker process
    result = asyncio.run(
        measure(
            args.bootstrap,
            args.topic,
            args.count,
            args.max_in_flight,
            args.control,
            args.database_url,
            watch,
        )
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
