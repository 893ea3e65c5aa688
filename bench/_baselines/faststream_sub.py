"""FastStream baseline for the eventflow Kafka benchmark: a typical framework consumer.

A plain per-message FastStream subscriber (``KafkaBroker``, ``@broker.subscriber``
with the ``Order`` pydantic model as the handler's parameter, no batching) that
does the same per-event work as eventflow's two-task flow and tracks nothing.
It runs inside the cached FastStream venv (see ``bench/_kafka_baselines.py``),
since FastStream pins its own aiokafka and pydantic ranges::

    python bench/_baselines/faststream_sub.py --bootstrap 127.0.0.1:19392 \\
        --topic orders --count 200000 --group fs-1 [--ack-policy ack_first|ack]

Offsets: FastStream 0.7's Kafka default is ``AckPolicy.ACK_FIRST``, which turns
on aiokafka's auto-commit (every 5 s, plus a final commit when the consumer
stops); that is the normal usage and what we measure by default, so ``seconds``
runs from the first message handled to the ``count``-th, plus the time the
broker takes to stop, which includes that final commit. ``--ack-policy
ack`` commits after every handled message (one broker round trip each), the
at-least-once setting; it is far slower. ``committed`` is read back from the
broker afterwards, to prove the offsets were committed either way; it exceeds
``events`` when the topic holds more than ``count`` (the loop runs on until it
is stopped, and auto-commit commits what it fetched).

The per-message access log ("Received"/"Processed") is emitted at DEBUG, i.e.
not printed: eventflow prints no line per event either, and 400,000 log lines
would measure the terminal, not the framework. Prints exactly one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy

_BENCH = Path(__file__).resolve().parent.parent
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

from _kafka_common import Order, committed_total, fetch_customer, load  # noqa: E402
from _proc import peak_rss_mb  # noqa: E402  (its own VmHWM, not the parent's)

IMPL = "faststream"
ACK_POLICIES = {"ack_first": AckPolicy.ACK_FIRST, "ack": AckPolicy.ACK}


async def consume(
    bootstrap: str, topic: str, count: int, group: str, ack_policy: str, idle_timeout_s: float
) -> dict[str, Any]:
    """Run the subscriber until ``count`` orders are handled; return the figures."""
    broker = KafkaBroker(bootstrap, log_level=logging.DEBUG)
    done = asyncio.Event()
    state: dict[str, Any] = {"processed": 0, "checksum": 0, "t_first": None, "t_count": None}

    @broker.subscriber(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        ack_policy=ACK_POLICIES[ack_policy],
    )
    async def handle(order: Order) -> None:
        if state["processed"] >= count:
            return  # fetched before the broker stopped: not part of the run
        if state["t_first"] is None:
            state["t_first"] = time.perf_counter()
        state["checksum"] += load(order, fetch_customer(order.customer_id))
        state["processed"] += 1
        if state["processed"] >= count:
            state["t_count"] = time.perf_counter()
            done.set()

    t_start = time.perf_counter()
    await broker.start()
    try:
        last_seen, last_change = 0, time.perf_counter()
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), timeout=1.0)
            except TimeoutError:
                if state["processed"] != last_seen:
                    last_seen, last_change = state["processed"], time.perf_counter()
                elif time.perf_counter() - last_change > idle_timeout_s:
                    raise TimeoutError(
                        f"no message for {idle_timeout_s:g}s after {last_seen}/{count}"
                    ) from None
        t_done = time.perf_counter()
    finally:
        # Stops the consume task, then the aiokafka consumer (final auto-commit).
        await broker.stop()
    stop_s = time.perf_counter() - t_done
    committed = await committed_total(bootstrap, group, topic)
    t_first: float = state["t_first"]
    # Not t_done - t_first: while getone() serves buffered records the consume
    # loop never yields, so this task may only wake after the handler has
    # skipped many more (when the topic holds more than `count`).
    seconds = state["t_count"] - t_first + stop_s
    processed: int = state["processed"]
    return {
        "impl": IMPL,
        "events": processed,
        "seconds": round(seconds, 3),
        "events_per_s": round(processed / seconds, 1) if seconds > 0 else None,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "startup_s": round(t_first - t_start, 3),
        "stop_s": round(stop_s, 3),
        "wake_lag_s": round(t_done - state["t_count"], 3),
        "ack_policy": ack_policy,
        "committed": committed,
        "checksum": state["checksum"],
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the subscriber, print one JSON line (an ``error`` one on failure)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--group", required=True, help="use a fresh one to read from the start")
    parser.add_argument("--ack-policy", choices=sorted(ACK_POLICIES), default="ack_first")
    parser.add_argument("--idle-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be >= 1")
    try:
        result = asyncio.run(
            consume(
                args.bootstrap,
                args.topic,
                args.count,
                args.group,
                args.ack_policy,
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
