"""The Kafka benchmark's two-task flow as an App for `eventflow run` (bench/kafka_workers.py).

Configured by environment: BOOTSTRAP, TOPIC, GROUP, MAX_IN_FLIGHT.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kafka_common import Order, fetch_customer, load

from connectors.kafka import KafkaSource
from eventflow import App, flow, task


@task(retries=2)
async def fetch(customer_id: str) -> dict[str, Any]:
    return fetch_customer(customer_id)


@task
async def store(order: Order, customer: dict[str, Any]) -> int:
    return load(order, customer)


@flow(name="bench-orders")
async def process(order: Order) -> int:
    return await store(order, await fetch(order.customer_id))


max_in_flight = int(os.environ.get("MAX_IN_FLIGHT", "2048"))
app = App()
app.subscribe(
    KafkaSource(
        os.environ["TOPIC"], bootstrap_servers=os.environ["BOOTSTRAP"], group_id=os.environ["GROUP"]
    ),
    process,
    max_in_flight=max_in_flight,
    max_in_flight_per_partition=max_in_flight,
)
