"""Benchmark: Kafka order events through a two-task flow, every run tracked, beside baselines.

    .venv/bin/python bench/kafka.py [--events 200000] [--store both|sqlite|postgresql]
        [--results both|on|off] [--tracing off|on|both]
        [--rounds 3] [--skip-faststream] [--latency-rate 5000]

Starts a local broker (scripts/kafka.sh) and, for PostgreSQL, a local server
(scripts/postgres.sh), fills a topic with order events, then reads the same
topic contents with a fresh consumer group each:
- eventflow: a two-task flow per event, every flow run and task run in the
  store (a new SQLite file, or a new PostgreSQL database, each round), offsets
  stored with the runs and committed to Kafka; with `--store both` (the
  default) the two stores alternate for `--rounds` rounds each and are printed
  side by side, with CPU µs per event per process (worker, writer process,
  PostgreSQL server, broker) read from /proc over each run's window; with
  `--results both` (the default) each store also runs with task results not
  kept (rows `<store>-nores`), alternating, and the ratio is printed; with
  `--tracing both` (the default) each also runs with every span exported to a
  local Jaeger (scripts/jaeger.sh; OTLP, 100% sampling; rows `<store>-traced`)
  beside the runs with no TracerProvider, and the ratio is printed;
- a raw aiokafka `getmany` loop doing the same work untracked, committing per batch;
- a FastStream subscriber doing the same work (its default ack policy).
Then, for latency, events are produced at a steady rate while eventflow consumes
them, and the produce-to-run-end p50/p99 are read from the store.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
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

import orjson  # noqa: E402
from _eventflow_kafka import CONTROLS  # noqa: E402
from _kafka_baselines import measure_faststream, measure_raw_aiokafka  # noqa: E402
from _kafka_common import make_order  # noqa: E402
from _kafka_produce import create_topic, produce_orders  # noqa: E402
from _proc import broker_pid, postmaster_pid  # noqa: E402
from aiokafka import AIOKafkaProducer  # noqa: E402

sys.path.insert(0, str(ROOT))
from tests._kafka import free_port_pair  # noqa: E402
from tests._services import Postgres, free_port  # noqa: E402

PG_SETTINGS = {"PG_SHARED_BUFFERS": "256MB"}
"""The bench's PostgreSQL: room for a few hundred thousand runs in memory."""


def measure_eventflow(
    bootstrap: str,
    topic: str,
    count: int,
    control: str = "none",
    database_url: str | None = None,
    watch: tuple[str, ...] | list[str] = (),
    watch_tree: tuple[str, ...] | list[str] = (),
    persist_results: bool = True,
    tree: Path = ROOT,
    tracing: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One eventflow round; with `tree`, the eventflow of that checkout (`--compare-with`)."""
    script = tree / "bench" / "_eventflow_kafka.py"
    child = [sys.executable, str(script), bootstrap, topic, str(count)]
    if database_url is not None:
        child += ["--database-url", database_url]
    child += [f"--watch={w}" for w in watch] + [f"--watch-tree={w}" for w in watch_tree]
    done = subprocess.run(
        [*child, "--control", control],
        capture_output=True,
        text=True,
        cwd=tree,
        timeout=1800,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
            "EVENTFLOW_PERSIST_RESULTS": "1" if persist_results else "0",
            **(tracing or {}),
            **({} if tree == ROOT else {"PYTHONPATH": str(tree)}),
        },
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"impl": "eventflow", "error": done.stderr[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def produce_paced(bootstrap: str, topic: str, rate: int, seconds: float) -> None:
    """Produce `rate` orders per second for `seconds`, in small bursts every 10 ms."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=1)
    await producer.start()
    try:
        await producer.partitions_for(topic)
        total = int(rate * seconds)
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0.01:
                await asyncio.sleep(delay)
            await producer.send(topic, orjson.dumps(make_order(i)), key=f"c-{i % 100}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def measure_latency(bootstrap: str, rate: int, seconds: float) -> dict[str, Any]:
    topic = f"latency-{uuid.uuid4().hex[:8]}"
    await create_topic(bootstrap, topic, 4)
    count = int(rate * seconds)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCH / "_eventflow_kafka.py"),
        bootstrap,
        topic,
        str(count),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await asyncio.sleep(3)  # the consumer joins its group before the clock starts
    await produce_paced(bootstrap, topic, rate, seconds)
    stdout, stderr = await child.communicate()
    lines = [line for line in stdout.decode().splitlines() if line.startswith("{")]
    if child.returncode != 0 or not lines:
        return {"impl": "eventflow", "error": stderr.decode()[-2000:]}
    result: dict[str, Any] = json.loads(lines[-1])
    result["rate"] = rate
    return result


def table(results: list[dict[str, Any]]) -> str:
    columns = (
        "events",
        "events_per_s",
        "tracked_runs",
        "latency_p50_s",
        "latency_p99_s",
        "peak_rss_mb",
    )
    header = ("events", "events/s", "tracked", "p50 s", "p99 s", "RSS MB")
    lines = [f"{'impl':<14} " + " ".join(f"{h:>9}" for h in header)]
    for r in results:
        if "error" in r:
            lines.append(f"{r.get('impl')!s:<14} error: {str(r['error'])[:300]}")
            continue
        cells = " ".join(f"{r.get(c, '-')!s:>9}" for c in columns)
        lines.append(f"{r['impl']!s:<14} {cells}")
    return "\n".join(lines)


def median_range(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


def side_by_side(by_store: dict[str, list[dict[str, Any]]]) -> str:
    """Events/s and CPU µs per event per process, median over the rounds of each store."""
    processes = ("worker", "writer", "postgres", "broker")
    lines = [
        f"{'store':<16} {'events/s median (range)':>26} {'vs sqlite':>9} "
        + " ".join(f"{p + ' us/ev':>15}" for p in processes)
    ]
    sqlite = [r["events_per_s"] for r in by_store.get("sqlite", []) if "error" not in r]
    for store, runs in by_store.items():
        ok = [r for r in runs if "error" not in r]
        rates = [r["events_per_s"] for r in ok]
        ratio = (
            f"{statistics.median(rates) / statistics.median(sqlite):.2f}x"
            if rates and sqlite
            else "-"
        )
        cells = []
        for p in processes:
            values = [r["cpu_us_per_event"][p] for r in ok if p in r.get("cpu_us_per_event", {})]
            cells.append(f"{statistics.median(values):>15.1f}" if values else f"{'-':>15}")
        lines.append(f"{store:<16} {median_range(rates):>26} {ratio:>9} " + " ".join(cells))
        for r in runs:
            if "error" in r:
                lines.append(f"  error: {str(r['error'])[-300:]}")
    return "\n".join(lines)


def _label(store: str, persist_results: bool, traced: bool = False, tree: Path = ROOT) -> str:
    """A row of the side-by-side table: the store, `-nores` without task results kept,
    `-traced` with every span exported, `-base` for the checkout compared with."""
    label = store + ("" if persist_results else "-nores") + ("-traced" if traced else "")
    return label if tree == ROOT else f"{label}-base"


def tracing_ratio(by_store: dict[str, list[dict[str, Any]]], stores: tuple[str, ...]) -> str:
    """Events/s with every span exported over with no TracerProvider (median of the rounds)."""
    lines = ["spans exported to Jaeger (100% sampled) vs no TracerProvider (events/s, median):"]
    for store in stores:
        off = [r["events_per_s"] for r in by_store[_label(store, True)] if "error" not in r]
        on = [r["events_per_s"] for r in by_store[_label(store, True, True)] if "error" not in r]
        if on and off:
            traced, plain = statistics.median(on), statistics.median(off)
            lines.append(
                f"  {store}: {traced:,.0f} traced, {plain:,.0f} not: {traced / plain:.2f}x"
                f" ({(traced / plain - 1) * 100:+.0f}% events/s)"
            )
    return "\n".join(lines)


def results_ratio(by_store: dict[str, list[dict[str, Any]]], stores: tuple[str, ...]) -> str:
    """Events/s with task results kept over without, per store (median of the rounds)."""
    lines = ["task results kept vs not (events/s, median):"]
    for store in stores:
        on = [r["events_per_s"] for r in by_store[store] if "error" not in r]
        off = [r["events_per_s"] for r in by_store[_label(store, False)] if "error" not in r]
        if on and off:
            kept, not_kept = statistics.median(on), statistics.median(off)
            lines.append(
                f"  {store}: {kept:,.0f} with, {not_kept:,.0f} without: {kept / not_kept:.2f}x"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--store", choices=("both", "sqlite", "postgresql"), default="both")
    parser.add_argument("--rounds", type=int, default=3, help="eventflow runs per store")
    parser.add_argument("--skip-faststream", action="store_true")
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--latency-rate", type=int, default=5000)
    parser.add_argument("--latency-seconds", type=float, default=10)
    parser.add_argument(
        "--controls",
        default="",
        help="comma-separated flow controls to measure eventflow with (bench/_eventflow_kafka.py"
        " CONTROLS), e.g. concurrency,rate_limit,idempotency; 'all' for every one",
    )
    parser.add_argument(
        "--results",
        choices=("on", "off", "both"),
        default="both",
        help="task results kept (the default) or not; 'both' alternates them in each store's"
        " rounds and prints both figures",
    )
    parser.add_argument(
        "--compare-with",
        metavar="TREE",
        type=Path,
        help="another checkout of eventflow (e.g. `git worktree add /tmp/base HEAD~1`): each"
        " round also runs its eventflow, alternating with this one's, rows suffixed `-base`",
    )
    parser.add_argument(
        "--tracing",
        choices=("off", "on", "both"),
        default="both",
        help="no TracerProvider (off), every span exported to a local Jaeger (on), or both"
        " alternating (with task results kept), the ratio printed",
    )
    args = parser.parse_args()

    data_dir = tempfile.mkdtemp(prefix="eventflow-kbench-broker-")
    port = free_port_pair()
    bootstrap = f"127.0.0.1:{port}"
    subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "start", data_dir, str(port)], check=True)
    stores = ("sqlite", "postgresql") if args.store == "both" else (args.store,)
    postgres: Postgres | None = None
    jaeger_dir = tempfile.mkdtemp(prefix="eventflow-kbench-jaeger-")
    tracing_env: dict[str, str] = {}
    if args.tracing != "off":
        ports = [str(free_port()) for _ in range(3)]
        subprocess.run(
            [str(ROOT / "scripts" / "jaeger.sh"), "start", jaeger_dir, *ports], check=True
        )
        tracing_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports[1]}",
            "OTEL_SERVICE_NAME": "eventflow-bench",
            "OTEL_TRACES_SAMPLER": "always_on",
            # room for the spans of a second of runs: a full queue drops spans, never waits
            "OTEL_BSP_MAX_QUEUE_SIZE": "65536",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
        }
    if "postgresql" in stores:
        os.environ.update(PG_SETTINGS)
        postgres = Postgres.start_new()
    try:
        topic = f"orders-{uuid.uuid4().hex[:8]}"
        produced_s = produce_orders(bootstrap, topic, args.events)
        print(f"produced {args.events} orders in {produced_s:.1f}s", flush=True)
        print("load before the runs:", os.getloadavg(), flush=True)
        watch = [f"broker={broker_pid(data_dir)}"]
        persist = {"on": (True,), "off": (False,), "both": (True, False)}[args.results]
        traced = {"off": (False,), "on": (True,), "both": (False, True)}[args.tracing]
        trees = [ROOT] if args.compare_with is None else [ROOT, args.compare_with.resolve()]
        kinds = [
            (store, keep, trace, tree)
            for store in stores
            for keep in persist
            for trace in traced
            for tree in trees
            if keep or not trace  # traced runs keep results: one ratio to read
        ]
        by_store: dict[str, list[dict[str, Any]]] = {_label(*kind): [] for kind in kinds}
        for round_ in range(args.rounds):
            for store, keep, trace, tree in kinds if round_ % 2 == 0 else kinds[::-1]:
                url, watched = None, []
                if store == "postgresql":
                    assert postgres is not None
                    url = postgres.create_database()
                    watched = [f"postgres={postmaster_pid(postgres.data_dir)}"]
                result = measure_eventflow(
                    bootstrap,
                    topic,
                    args.events,
                    "none",
                    url,
                    watch,
                    watched,
                    persist_results=keep,
                    tree=tree,
                    tracing=tracing_env if trace else None,
                )
                if postgres is not None and url is not None:
                    postgres.drop_database(url)  # rounds do not write out each other's pages
                by_store[_label(store, keep, trace, tree)].append(result)
                print(
                    f"round {round_ + 1} {_label(store, keep, trace, tree)}: "
                    f"{result.get('events_per_s', 'error')} events/s,"
                    f" CPU us/event {result.get('cpu_us_per_event', result.get('error'))}",
                    flush=True,
                )
        print("load after the runs:", os.getloadavg(), flush=True)
        print(f"\neventflow, {args.rounds} alternating round(s) per store, the same topic:")
        print(side_by_side(by_store))
        if args.results == "both":
            print(results_ratio(by_store, stores))
        if args.tracing == "both" and args.results != "off":
            print(tracing_ratio(by_store, stores))
        results = [by_store[_label(*kinds[0])][0]]
        if args.skip_baselines:
            return
        controls = [c for c in args.controls.split(",") if c]
        if controls == ["all"]:
            controls = list(CONTROLS)[1:]
        for control in controls:
            results.append(measure_eventflow(bootstrap, topic, args.events, control))
        results.append(measure_raw_aiokafka(bootstrap, topic, args.events))
        if not args.skip_faststream:
            results.append(measure_faststream(bootstrap, topic, args.events))
        print("\nthroughput, the same pre-filled topic for every consumer:")
        print(table(results))
        samples = results[0].get("rss_samples")
        if samples:
            print(
                "eventflow RSS (MB) by runs completed:",
                ", ".join(f"{n}: {mb}" for n, mb in samples),
            )
        if args.latency_rate:
            latency = asyncio.run(
                measure_latency(bootstrap, args.latency_rate, args.latency_seconds)
            )
            print(
                f"\nlatency, eventflow consuming {args.latency_rate} events/s as they are produced:"
            )
            print(table([latency]))
    finally:
        subprocess.run([str(ROOT / "scripts" / "kafka.sh"), "stop", data_dir], check=False)
        shutil.rmtree(data_dir, ignore_errors=True)
        subprocess.run([str(ROOT / "scripts" / "jaeger.sh"), "stop", jaeger_dir], check=False)
        shutil.rmtree(jaeger_dir, ignore_errors=True)
        if postgres is not None:
            postgres.remove()


if __name__ == "__main__":
    main()
