"""A worker the process-level tests run with `eventflow run`, configured by environment."""

from __future__ import annotations

import asyncio
import os

import pydantic

from connectors.kafka import KafkaSource
from eventflow import App, WebhookNotifier, flow, task

WORK_SECONDS = float(os.environ.get("WORK_SECONDS", "0.01"))


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int
    seq: int = 0


GATE = os.environ.get("GATE")
"""A file path: while that file exists, runs wait (a flow that cannot make progress)."""


@task(retries=2)
async def enrich(order: Order) -> dict[str, str]:
    await asyncio.sleep(WORK_SECONDS)
    # the gate is a file another process creates: nothing to await but its absence
    while GATE and os.path.exists(GATE):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.05)
    return {"customer": order.customer_id}


@task
async def load(order: Order, customer: dict[str, str]) -> int:
    return order.amount


@flow(name="worker-orders")
async def process(order: Order) -> int:
    return await load(order, await enrich(order))


NOTIFY_URL = os.environ.get("NOTIFY_URL")
app = App(notifiers=[WebhookNotifier(NOTIFY_URL, backoff=0.1)] if NOTIFY_URL else [])
app.subscribe(
    KafkaSource(
        os.environ["TOPIC"],
        bootstrap_servers=os.environ["BOOTSTRAP"],
        group_id=os.environ["GROUP"],
        session_timeout_ms=int(os.environ.get("SESSION_TIMEOUT_MS", "10000")),
        heartbeat_interval_ms=1000,
        rebalance_timeout_ms=int(os.environ.get("REBALANCE_TIMEOUT_MS", "20000")),
        stall_timeout_s=float(os.environ.get("STALL_TIMEOUT_S", "10")),
    ),
    process,
    max_in_flight=int(os.environ.get("MAX_IN_FLIGHT", "100")),
    revoke_grace_seconds=5,
)
