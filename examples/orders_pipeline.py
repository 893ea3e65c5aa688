"""The orders pipeline of the blog post, on eventflow: poll the orders API, load what came.

    uvicorn examples.orders_api:app --port 8000          # the order generator
    python examples/orders_pipeline.py 20                # batch: one tracked run, max_value=20
    eventflow run examples/orders_pipeline.py:app        # every 2 s, in a worker

`fetch_orders` calls the API with `retries=5` and a retry delay (the API fails
now and then); when there are no new orders the flow skips loading (an
ordinary `if`); otherwise `load_orders` writes them to a SQLite table. The
`max_value: int = 20` parameter is validated by pydantic: `"25"` becomes 25,
`"lots"` fails the run before anything is called.

ORDERS_API_URL (default http://127.0.0.1:8000) and ORDERS_WAREHOUSE (default
orders_warehouse.db) configure it; the run store is EVENTFLOW_DATABASE_URL.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pydantic

from connectors.schedule import IntervalSchedule
from eventflow import App, flow, get_run_logger, task


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int


def api_url() -> str:
    return os.environ.get("ORDERS_API_URL", "http://127.0.0.1:8000")


@task(retries=5, retry_delay_seconds=0.5, retry_jitter_factor=0.5)
def fetch_orders(max_value: int) -> list[Order]:
    response = httpx.get(f"{api_url()}/orders", params={"max_value": max_value}, timeout=10)
    response.raise_for_status()  # a 503 from the API fails this attempt; the retries absorb it
    return [Order.model_validate(o) for o in response.json()["orders"]]


@task
def load_orders(orders: list[Order]) -> int:
    warehouse = Path(os.environ.get("ORDERS_WAREHOUSE", "orders_warehouse.db"))
    with sqlite3.connect(warehouse, timeout=30) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS pipeline_orders"
            " (id TEXT PRIMARY KEY, customer_id TEXT, amount INT)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO pipeline_orders VALUES (?, ?, ?)",
            [(o.id, o.customer_id, o.amount) for o in orders],
        )
    return len(orders)


@flow(name="orders-pipeline")
def orders_pipeline(max_value: int = 20) -> int:
    future = fetch_orders.submit(max_value)
    future.wait()  # the task's final State (after its retries)
    orders = future.result()  # raises if every attempt failed: the flow run fails
    if not orders:
        get_run_logger().info("no new orders; nothing to load")
        return 0
    loaded = load_orders(orders)
    get_run_logger().info("loaded %d orders (max value %d)", loaded, max_value)
    return loaded


app = App()
app.subscribe(IntervalSchedule(every=timedelta(seconds=2), name="orders-pipeline"), orders_pipeline)


if __name__ == "__main__":
    state = orders_pipeline(sys.argv[1] if len(sys.argv) > 1 else 20, return_state=True)
    outcome = state.result(raise_on_failure=False)
    print(f"orders-pipeline run {state.run_id}: {state.name}, {outcome}")
