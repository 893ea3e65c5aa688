"""A worker for the fencing tests (issue 21): runs of 0.2-0.6 s, started with `eventflow run`.

Each run takes two tasks (`enrich` then `ship`), so a frozen worker holds runs
with a task done and a task in flight. `ship` appends one line per call to the
file SIDE_EFFECTS, if set: `<order id> <pid>`, the side effect that may repeat
(at-least-once) where a finished run must not. Durations come from the order's
id, so a rerun of an event takes as long as its first run.

With OUT_TOPIC set, `ship` also publishes one message per order there
(`KafkaSink.publish`, key: the customer): exactly once per completed run.

Environment: TOPIC, BOOTSTRAP, GROUP; SESSION_TIMEOUT_MS (default 6000, the
broker's minimum), MAX_IN_FLIGHT (default 40), SIDE_EFFECTS, OUT_TOPIC.
"""

from __future__ import annotations

import asyncio
import os
import zlib

import orjson
import pydantic

from connectors.kafka import KafkaSink, KafkaSource
from eventflow import App, flow, task

SIDE_EFFECTS = os.environ.get("SIDE_EFFECTS")
OUT_TOPIC = os.environ.get("OUT_TOPIC")
out = KafkaSink(OUT_TOPIC, bootstrap_servers=os.environ["BOOTSTRAP"]) if OUT_TOPIC else None


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int
    seq: int = 0


def _seconds(order: Order, salt: bytes) -> float:
    """0.1-0.3 s, fixed per order and task: a run takes 0.2-0.6 s."""
    return 0.1 + (zlib.crc32(order.id.encode() + salt) % 201) / 1000


def _append(line: str) -> None:
    # one write(2) on an O_APPEND file: whole lines even when the process is killed
    assert SIDE_EFFECTS is not None
    fd = os.open(SIDE_EFFECTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@task
async def enrich(order: Order) -> str:
    await asyncio.sleep(_seconds(order, b"enrich"))
    return order.customer_id


@task
async def ship(order: Order, customer: str) -> int:
    await asyncio.sleep(_seconds(order, b"ship"))
    if SIDE_EFFECTS:
        _append(f"{order.id} {os.getpid()}")
    if out is not None:
        message = {"id": order.id, "seq": order.seq, "n": 0}
        out.publish(orjson.dumps(message), key=order.customer_id.encode())
    return order.amount


@flow(name="fenced-orders")
async def process(order: Order) -> int:
    return await ship(order, await enrich(order))


app = App()
app.subscribe(
    KafkaSource(
        os.environ["TOPIC"],
        bootstrap_servers=os.environ["BOOTSTRAP"],
        group_id=os.environ["GROUP"],
        session_timeout_ms=int(os.environ.get("SESSION_TIMEOUT_MS", "6000")),
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=int(os.environ.get("REBALANCE_TIMEOUT_MS", "10000")),
    ),
    process,
    max_in_flight=int(os.environ.get("MAX_IN_FLIGHT", "40")),
    revoke_grace_seconds=3,
)
