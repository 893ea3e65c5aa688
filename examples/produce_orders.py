"""Produce order events to Kafka for the streaming demo, a few of them malformed.

python examples/produce_orders.py BOOTSTRAP COUNT
"""

from __future__ import annotations

import asyncio
import random
import sys

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError


async def produce(bootstrap: str, count: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("orders", num_partitions=4, replication_factor=1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=10)
    await producer.start()
    try:
        for i in range(count):
            customer = f"c{random.randrange(50)}"
            if i % 500 == 499:
                value = b"{not json"  # a poison message: goes to orders.dlq, never loops
            elif i % 500 == 250:
                value = orjson.dumps({"id": f"o{i}", "customer_id": customer, "amount": -5})
            else:
                amount = random.randrange(100)
                value = orjson.dumps({"id": f"o{i}", "customer_id": customer, "amount": amount})
            await producer.send("orders", value, key=customer.encode())
        await producer.flush()
    finally:
        await producer.stop()
    print(f"produced {count} order events to 'orders' on {bootstrap}")


if __name__ == "__main__":
    asyncio.run(produce(sys.argv[1], int(sys.argv[2])))
