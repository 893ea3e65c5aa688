"""A traced worker for the Jaeger tests, run with `eventflow run` and the OTEL_* variables.

Each order goes through two tasks, each failing its first attempt (a retry on
each), and the second publishes the order to OUTPUT_TOPIC. An order with a
negative amount fails its flow run. While the file GATE exists, `ship` waits
(the crash test kills the worker there).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter

import orjson
import pydantic

from connectors.kafka import KafkaSink, KafkaSource
from eventflow import App, flow, get_run_logger, task

GATE = os.environ.get("GATE")
OUTPUT = KafkaSink(os.environ["OUTPUT_TOPIC"], bootstrap_servers=os.environ["BOOTSTRAP"])
_attempts: Counter[str] = Counter()


class Order(pydantic.BaseModel):
    id: str
    amount: int


@task(retries=2)
async def enrich(order: Order) -> dict[str, str]:
    _attempts[f"enrich {order.id}"] += 1
    if _attempts[f"enrich {order.id}"] == 1:
        raise ConnectionError("the customer service did not answer")
    return {"order": order.id, "tier": "gold"}


@task(retries=1)
async def ship(order: Order, customer: dict[str, str]) -> int:
    # the gate is a file the test removes: nothing to await but its absence
    while GATE and os.path.exists(GATE):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    _attempts[f"ship {order.id}"] += 1
    if order.amount < 0:
        raise ValueError(f"order {order.id} has a negative amount")
    if _attempts[f"ship {order.id}"] == 1:
        raise TimeoutError("the warehouse timed out")
    await OUTPUT.send(orjson.dumps({**customer, "amount": order.amount}), key=order.id.encode())
    get_run_logger().info("shipped %s", order.id)
    return order.amount


@flow(name="traced-orders")
async def process(order: Order) -> int:
    return await ship(order, await enrich(order))


app = App()
app.subscribe(
    KafkaSource(
        os.environ["TOPIC"],
        bootstrap_servers=os.environ["BOOTSTRAP"],
        group_id=os.environ["GROUP"],
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    ),
    process,
    on_failure="skip",
)
