"""A worker whose flow publishes one or two messages per order (`KafkaSink.publish`).

TOPIC -> flow -> OUT_TOPIC. A task publishes the first message (key: the
customer), the flow's body a second one for even-numbered orders; an order
whose number is a multiple of FAIL_EVERY fails after publishing (its run ends
FAILED: nothing of it may be published). WORK_SECONDS per task call.
"""

from __future__ import annotations

import asyncio
import os

import orjson
import pydantic

from connectors.kafka import KafkaSink, KafkaSource
from eventflow import App, flow, task

WORK_SECONDS = float(os.environ.get("WORK_SECONDS", "0.01"))
FAIL_EVERY = int(os.environ.get("FAIL_EVERY", "0"))

out = KafkaSink(os.environ["OUT_TOPIC"], bootstrap_servers=os.environ["BOOTSTRAP"])


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int
    seq: int = 0


def _message(order: Order, n: int) -> bytes:
    return orjson.dumps(
        {
            "id": order.id,
            "customer_id": order.customer_id,
            "amount": order.amount,
            "seq": order.seq,
            "n": n,
        }
    )


@task
async def validate(order: Order) -> int:
    await asyncio.sleep(WORK_SECONDS)
    out.publish(_message(order, 0), key=order.customer_id.encode())
    return order.amount


@task
async def settle(order: Order, amount: int) -> int:
    await asyncio.sleep(WORK_SECONDS)
    if FAIL_EVERY and int(order.id[1:]) % FAIL_EVERY == 0:
        raise ValueError(f"order {order.id} cannot be settled")
    return amount


@flow(name="publish-orders")
async def process(order: Order) -> int:
    amount = await validate(order)
    if int(order.id[1:]) % 2 == 0:
        out.publish(_message(order, 1), key=order.customer_id.encode())
    return await settle(order, amount)


app = App()
app.subscribe(
    KafkaSource(
        os.environ["TOPIC"],
        bootstrap_servers=os.environ["BOOTSTRAP"],
        group_id=os.environ["GROUP"],
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
        stall_timeout_s=10,
    ),
    process,
    on_failure="skip",
    max_in_flight=int(os.environ.get("MAX_IN_FLIGHT", "100")),
    revoke_grace_seconds=5,
)
