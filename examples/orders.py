"""The orders pipeline: one flow, run in batch (called directly) or streaming (one run per event).

    python examples/orders.py 100                  # batch: 100 direct calls, each a tracked run
    eventflow run examples/orders.py:app           # streaming: every order event a tracked run

Streaming reads the `orders` topic of EVENTFLOW_KAFKA_BOOTSTRAP (default
localhost:9092) in consumer group `orders`; failed and malformed events go to
`orders.dlq`. With ORDERS_API_URL set (the orders API of examples/orders_api.py),
the same worker also polls the API's new orders into runs of the same flow, and
runs the blog's batch pipeline (examples/orders_pipeline.py) every 2 seconds:
Kafka, HTTP and a schedule in one process, one store. Loaded orders land in a
SQLite table, `orders_warehouse.db` (ORDERS_WAREHOUSE).

Lineage: `process-order` writes `table:warehouse.orders`, which the scheduled
batch flow `orders-report` reads (every 5 s) to write
`table:warehouse.order_totals`; so the report is downstream of the Kafka topic.
The topic is expected to bring an order at least every ORDERS_EXPECT_EVERY
seconds (default 30): stop the producer and `kafka:orders` turns late, with
`process-order` and `orders-report` affected (`eventflow late`, the UI's
lineage page, and a notice to ORDERS_WEBHOOK_URL if set).
"""

from __future__ import annotations

import os
import random
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

import pydantic

from connectors.http import HttpPollSource
from connectors.kafka import KafkaSource
from connectors.schedule import IntervalSchedule
from eventflow import App, WebhookNotifier, flow, get_run_logger, task
from examples.orders_pipeline import orders_pipeline

WAREHOUSE = Path(os.environ.get("ORDERS_WAREHOUSE", "orders_warehouse.db"))


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int


@task(retries=3, retry_delay_seconds=[0.05, 0.2], retry_jitter_factor=0.5)
def fetch_customer(customer_id: str) -> dict[str, str]:
    """A flaky customer service: one call in ten fails, the retries absorb it."""
    if random.random() < 0.1:
        raise ConnectionError("customer service timed out")
    return {"id": customer_id, "tier": "gold" if customer_id.endswith("7") else "standard"}


@task
def load(order: Order, customer: dict[str, str]) -> None:
    with sqlite3.connect(WAREHOUSE, timeout=30) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders"
            " (id TEXT PRIMARY KEY, customer TEXT, tier TEXT, amount INT)"
        )
        db.execute(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?)",
            (order.id, order.customer_id, customer["tier"], order.amount),
        )


@flow(name="process-order", retries=1, writes=["table:warehouse.orders"])
def process_order(order: Order, min_amount: int = 20) -> str:
    if order.amount < 0:
        raise ValueError(f"order {order.id} has a negative amount")
    customer = fetch_customer.submit(order.customer_id)
    if order.amount < min_amount:
        get_run_logger().info("skipping small order %s (%d)", order.id, order.amount)
        return "skipped"
    load(order, customer)
    return "loaded"


@flow(
    name="orders-report",
    reads=["table:warehouse.orders"],
    writes=["table:warehouse.order_totals"],
)
def orders_report() -> dict[str, int]:
    """The batch side: totals by customer tier, from what the streaming flow loaded."""
    with sqlite3.connect(WAREHOUSE, timeout=30) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders"
            " (id TEXT PRIMARY KEY, customer TEXT, tier TEXT, amount INT)"
        )
        db.execute("CREATE TABLE IF NOT EXISTS order_totals (tier TEXT PRIMARY KEY, amount INT)")
        totals = dict(db.execute("SELECT tier, SUM(amount) FROM orders GROUP BY tier").fetchall())
        db.executemany("INSERT OR REPLACE INTO order_totals VALUES (?, ?)", totals.items())
    return totals


hook = os.environ.get("ORDERS_WEBHOOK_URL")
app = App(notifiers=[WebhookNotifier(hook)] if hook else ())
app.subscribe(
    KafkaSource(
        "orders",
        bootstrap_servers=os.environ.get("EVENTFLOW_KAFKA_BOOTSTRAP", "localhost:9092"),
        group_id="orders",
    ),
    process_order,
    expect_every=timedelta(seconds=float(os.environ.get("ORDERS_EXPECT_EVERY", "30"))),
)
app.subscribe(
    IntervalSchedule(
        every=timedelta(seconds=5), name="orders-report", deadline=timedelta(seconds=30)
    ),
    orders_report,
)
if os.environ.get("ORDERS_API_URL"):
    api = os.environ["ORDERS_API_URL"]
    app.subscribe(
        HttpPollSource(
            f"{api}/orders",
            interval=1.0,
            params={"max_value": "100"},
            items="orders",
            id_field="id",
            key_field="customer_id",
        ),
        process_order,
    )
    app.subscribe(
        IntervalSchedule(every=timedelta(seconds=2), name="orders-pipeline"), orders_pipeline
    )


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    outcomes: dict[str, int] = {}
    for i in range(count):
        order = Order(id=f"batch-{i}", customer_id=f"c{i % 10}", amount=random.randrange(100))
        outcome = process_order(order)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"batch: {count} flow runs: {outcomes}")
