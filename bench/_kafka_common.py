"""The Kafka benchmark's workload, shared by eventflow and every baseline.

One definition of the event (`Order`) and of the two steps done per event
(`fetch_customer`, then `load`) so that eventflow's two-task flow, the raw
aiokafka loop and the FastStream subscriber all do exactly the same work; the
only difference measured is what each framework adds around it. Imports only
pydantic and the standard library (the FastStream venv has both).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pydantic

ORDER_TOPIC_PARTITIONS = 4
"""Default partition count of the benchmark topic (one consumer reads all of them)."""

DEFAULT_CUSTOMERS = 100
"""Distinct customer ids; also the message keys, so they spread over the partitions."""

_TIERS = ("bronze", "silver", "gold", "platinum")
_REGIONS = ("eu", "us", "apac")


class Order(pydantic.BaseModel):
    """One order event, as produced to the topic (JSON) and validated on consumption."""

    id: str
    customer_id: str
    amount: int


def make_order(i: int, customers: int = DEFAULT_CUSTOMERS) -> dict[str, Any]:
    """Return the JSON-able payload of the ``i``-th order; deterministic, so reruns match."""
    return {"id": f"o-{i}", "customer_id": f"c-{i % customers}", "amount": (i * 37) % 10_000 + 1}


def fetch_customer(customer_id: str) -> dict[str, Any]:
    """Stand-in for a customer lookup: pure CPU, a few microseconds, no I/O.

    Kept I/O-free so the benchmark measures per-event framework overhead (parsing,
    tracking, committing), not a fake network call that would dominate every impl.
    """
    digest = 0
    for ch in customer_id:
        digest = (digest * 31 + ord(ch)) & 0xFFFF_FFFF
    return {
        "id": customer_id,
        "tier": _TIERS[digest % len(_TIERS)],
        "region": _REGIONS[digest % len(_REGIONS)],
        "discount_pct": digest % 15,
    }


def load(order: Order, customer: dict[str, Any]) -> int:
    """Stand-in for writing the enriched order somewhere: returns the amount it 'loaded'."""
    discounted = order.amount * (100 - int(customer["discount_pct"])) // 100
    return order.amount * 2 + (discounted & 1)


def process(order: Order) -> int:
    """Both steps for one order, as the baselines run them (eventflow runs them as tasks)."""
    return load(order, fetch_customer(order.customer_id))


async def committed_total(bootstrap: str, group: str, topic: str) -> int:
    """Sum of the offsets ``group`` has committed on ``topic`` (0 if none).

    The baselines report this so a run proves it really committed what it
    consumed, instead of trusting the framework's ack setting.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


def committed_total_sync(bootstrap: str, group: str, topic: str) -> int:
    """Blocking form of :func:`committed_total` for callers without an event loop."""
    return asyncio.run(committed_total(bootstrap, group, topic))
