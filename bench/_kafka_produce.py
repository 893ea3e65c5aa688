"""Fill the Kafka benchmark topic with order events, fast.

Every implementation under test reads the same topic contents from the
beginning with its own consumer group, so the topic is produced once, up front,
and the produce time is not part of any consumer's figure.

Usage::

    python bench/_kafka_produce.py BOOTSTRAP TOPIC COUNT [--partitions N] [--customers N]

prints one JSON line: ``{"topic":..,"count":..,"seconds":..,"events_per_s":..}``.

Each record's Kafka timestamp (CreateTime) is set by the producer when the
record is handed to it, so a consumer can compute produce-to-processed latency
from ``record.timestamp`` without an extra field in the payload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

_HERE = Path(__file__).resolve().parent
if str(_HERE) not in sys.path:
    sys.path.insert(0, str(_HERE))

from _kafka_common import DEFAULT_CUSTOMERS, ORDER_TOPIC_PARTITIONS, make_order  # noqa: E402

# Futures are awaited in chunks so a broken broker surfaces early and the
# pending-future list stays bounded.
_CHUNK = 10_000


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create ``topic`` with ``partitions`` partitions; fine if it already has that many.

    Raises ``ValueError`` if it exists with another partition count: the
    benchmark's numbers depend on it (one fetch covers all partitions).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
        # create_topics does not raise on per-topic errors: read the codes.
        for entry in response.topic_errors:
            code = entry[1]
            if code and code != TopicAlreadyExistsError.errno:
                raise for_code(code)(f"creating topic {topic!r}: {entry[2:]}")
        # a busy broker may describe a topic it just created with no partitions yet
        deadline = time.perf_counter() + 30
        while True:
            described = await admin.describe_topics([topic])
            existing = len(described[0]["partitions"]) if described else 0
            if existing or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
    if existing != partitions:
        raise ValueError(f"topic {topic!r} has {existing} partitions, wanted {partitions}")


async def produce_orders_async(
    bootstrap: str,
    topic: str,
    count: int,
    partitions: int = ORDER_TOPIC_PARTITIONS,
    customers: int = DEFAULT_CUSTOMERS,
) -> float:
    """Create the topic, produce ``count`` JSON orders keyed by customer id; return seconds.

    The time covers producing and flushing only (acks=1), not topic creation.
    Orders are deterministic (``make_order``), so reruns produce identical data.
    """
    if count < 0:
        raise ValueError("count must be >= 0")
    await create_topic(bootstrap, topic, partitions)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks=1,
        linger_ms=20,
        max_batch_size=512 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await producer.start()
    try:
        # Metadata fetch (and leader election of a just-created topic) is not
        # produce work: wait for it before the clock starts.
        await producer.partitions_for(topic)
        keys = [f"c-{c}".encode() for c in range(customers)]
        t0 = time.perf_counter()
        pending: list[asyncio.Future[object]] = []
        for i in range(count):
            # send() only appends to a batch (it waits only if the buffer is
            # full); the returned future resolves when the broker acks.
            pending.append(
                await producer.send(
                    topic, orjson.dumps(make_order(i, customers)), key=keys[i % customers]
                )
            )
            if len(pending) >= _CHUNK:
                await asyncio.gather(*pending)
                pending.clear()
        await producer.flush()
        await asyncio.gather(*pending)
        return time.perf_counter() - t0
    finally:
        await producer.stop()


def produce_orders(
    bootstrap: str,
    topic: str,
    count: int,
    partitions: int = ORDER_TOPIC_PARTITIONS,
    customers: int = DEFAULT_CUSTOMERS,
) -> float:
    """Blocking wrapper of :func:`produce_orders_async` (runs its own event loop).

    Call it from synchronous code only; inside a running loop await
    ``produce_orders_async`` instead.
    """
    return asyncio.run(produce_orders_async(bootstrap, topic, count, partitions, customers))


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: produce, then print one JSON line with the rate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap", help="e.g. 127.0.0.1:19392")
    parser.add_argument("topic")
    parser.add_argument("count", type=int)
    parser.add_argument("--partitions", type=int, default=ORDER_TOPIC_PARTITIONS)
    parser.add_argument("--customers", type=int, default=DEFAULT_CUSTOMERS)
    args = parser.parse_args(argv)
    seconds = produce_orders(
        args.bootstrap, args.topic, args.count, args.partitions, args.customers
    )
    rate = args.count / seconds if seconds > 0 else 0.0
    print(
        json.dumps(
            {
                "topic": args.topic,
                "count": args.count,
                "partitions": args.partitions,
                "seconds": round(seconds, 3),
                "events_per_s": round(rate, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
