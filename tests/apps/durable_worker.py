"""A worker whose flows charge then ship each order, for the durable-execution crash tests.

`charge` appends to the file CHARGES (one line per call: the side effect that must
not happen twice), `ship` takes SHIP_SECONDS, or SLOW_SHIP_SECONDS for odd-numbered
orders. FLOW picks the flow's form: `sync`, `async` or `map` (two charges per
order, `map` then `submit`); CONCURRENCY, if set, bounds runs with that control.
"""

from __future__ import annotations

import asyncio
import os
import time

import pydantic

from connectors.kafka import KafkaSource
from eventflow import App, flow, task

SHIP_SECONDS = float(os.environ.get("SHIP_SECONDS", "0.1"))
SLOW_SHIP_SECONDS = float(os.environ.get("SLOW_SHIP_SECONDS", str(SHIP_SECONDS)))
CHARGES = os.environ["CHARGES"]


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int
    seq: int = 0


def _ship_seconds(order: Order) -> float:
    return SLOW_SHIP_SECONDS if int(order.id[1:]) % 2 else SHIP_SECONDS


def _append(line: str) -> None:
    # one write(2) of a whole line on an O_APPEND file: it survives a SIGKILL whole
    fd = os.open(CHARGES, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class Receipt(pydantic.BaseModel):
    order_id: str
    amount: int


@task
def charge(order: Order) -> Receipt:
    _append(order.id)
    return Receipt(order_id=order.id, amount=order.amount)


@task
def ship(order: Order, receipt: Receipt) -> str:
    assert isinstance(receipt, Receipt) and receipt.order_id == order.id
    time.sleep(_ship_seconds(order))
    return f"shipped {order.id}"


@task
async def charge_async(order: Order) -> Receipt:
    _append(order.id)
    return Receipt(order_id=order.id, amount=order.amount)


@task
async def ship_async(order: Order, receipt: Receipt) -> str:
    assert isinstance(receipt, Receipt) and receipt.order_id == order.id
    await asyncio.sleep(_ship_seconds(order))
    return f"shipped {order.id}"


@task
def charge_part(part: str) -> str:
    _append(part)
    return part


@flow(name="durable-sync")
def sync_flow(order: Order) -> str:
    return ship(order, charge(order))


@flow(name="durable-async")
async def async_flow(order: Order) -> str:
    return await ship_async(order, await charge_async(order))


@flow(name="durable-map")
def map_flow(order: Order) -> str:
    parts = charge_part.map([f"{order.id}:a", f"{order.id}:b"])
    receipt = Receipt(order_id=order.id, amount=order.amount)
    return ship.submit(order, receipt, wait_for=parts).result()


FLOWS = {"sync": sync_flow, "async": async_flow, "map": map_flow}

app = App()
app.subscribe(
    KafkaSource(
        os.environ["TOPIC"],
        bootstrap_servers=os.environ["BOOTSTRAP"],
        group_id=os.environ["GROUP"],
        session_timeout_ms=10000,
        heartbeat_interval_ms=1000,
    ),
    FLOWS[os.environ.get("FLOW", "sync")],
    max_in_flight=int(os.environ.get("MAX_IN_FLIGHT", "100")),
    revoke_grace_seconds=5,
    # a flow control: runs go through the controlled path (admission) to the engine
    concurrency=int(os.environ["CONCURRENCY"]) if "CONCURRENCY" in os.environ else None,
)
