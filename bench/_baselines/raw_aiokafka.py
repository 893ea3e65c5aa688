"""Raw aiokafka baseline for the eventflow Kafka benchmark: the floor to compare against.

A hand-written ``getmany`` loop doing the same per-event work as eventflow's
two-task flow (validate the JSON into ``Order``, ``fetch_customer``, ``load``),
with at-least-once commits after every batch, and nothing tracked. Run it with
the project's interpreter (aiokafka, pydantic, orjson)::

    python bench/_baselines/raw_aiokafka.py --bootstrap 127.0.0.1:19392 \\
        --topic orders --count 200000 --group raw-1

Prints exactly one JSON line on stdout. ``seconds`` runs from the first record
received to the commit of the last one; joining the group and the first fetch
are reported apart as ``startup_s``. ``committed`` is read back from the broker
after the consumer stopped, to prove the offsets were really committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

_BENCH = Path(__file__).resolve().parent.parent
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

from _kafka_common import Order, committed_total, fetch_customer, load  # noqa: E402
from _proc import peak_rss_mb  # noqa: E402  (its own VmHWM, not the parent's)

IMPL = "aiokafka-raw"


async def consume(
    bootstrap: str, topic: str, count: int, group: str, max_records: int, idle_timeout_s: float
) -> dict[str, Any]:
    """Consume and process ``count`` records, committing after each batch; return the figures."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    processed = batches = 0
    checksum = 0
    t_first: float | None = None
    t_start = t_last_commit = last_progress = time.perf_counter()
    try:
        await consumer.start()
        while processed < count:
            batch = await consumer.getmany(timeout_ms=1000, max_records=max_records)
            now = time.perf_counter()
            if not batch:
                if now - last_progress > idle_timeout_s:
                    raise TimeoutError(
                        f"no record for {idle_timeout_s:g}s after {processed}/{count}"
                    )
                continue
            if t_first is None:
                t_first = now
            last_progress = now
            offsets: dict[TopicPartition, int] = {}
            for tp, records in batch.items():
                for record in records:
                    if processed >= count:
                        break
                    order = Order.model_validate_json(record.value)
                    checksum += load(order, fetch_customer(order.customer_id))
                    processed += 1
                    offsets[tp] = record.offset + 1
            # Commit exactly what was processed (the last batch may be cut short).
            if offsets:
                await consumer.commit(offsets)
            batches += 1
            t_last_commit = time.perf_counter()
    finally:
        await consumer.stop()
    committed = await committed_total(bootstrap, group, topic)
    assert t_first is not None
    seconds = t_last_commit - t_first
    return {
        "impl": IMPL,
        "events": processed,
        "seconds": round(seconds, 3),
        "events_per_s": round(processed / seconds, 1) if seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "startup_s": round(t_first - t_start, 3),
        "batches": batches,
        "committed": committed,
        "checksum": checksum,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the loop, print one JSON line (an ``error`` one on failure)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--group", required=True, help="use a fresh one to read from the start")
    parser.add_argument(
        "--max-records",
        type=int,
        default=500,
        help="records per getmany (and so per commit); 500 = Kafka's max.poll.records default",
    )
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.count < 1 or args.max_records < 1:
        parser.error("--count and --max-records must be >= 1")
    try:
        result = asyncio.run(
            consume(
                args.bootstrap,
                args.topic,
                args.count,
                args.group,
                args.max_records,
                args.idle_timeout,
            )
        )
    except Exception as exc:
        print(json.dumps({"impl": IMPL, "error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
