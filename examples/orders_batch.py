"""Batch mode: the orders pipeline called directly, every call one tracked flow run.

python examples/orders_batch.py            # 50 runs into ./eventflow.db
eventflow runs list --flow process-orders  # what happened
"""

from __future__ import annotations

import random
import sqlite3
import sys
from pathlib import Path

import pydantic

from eventflow import flow, get_run_logger, task

WAREHOUSE = Path("orders_warehouse.db")


class Order(pydantic.BaseModel):
    id: str
    customer_id: str
    amount: int


@task(retries=5, retry_delay_seconds=0.05)
def fetch_orders(batch: int) -> list[Order]:
    """Pretend to call an orders API that sometimes fails and sometimes has nothing."""
    if random.random() < 0.2:  # a flaky API: the retries absorb it
        raise ConnectionError("orders API timed out")
    rng = random.Random(batch)
    return [
        Order(id=f"{batch}-{i}", customer_id=f"c{rng.randrange(10)}", amount=rng.randrange(100))
        for i in range(rng.randrange(0, 4))
    ]


@task
def load(orders: list[Order]) -> int:
    with sqlite3.connect(WAREHOUSE) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS orders (id TEXT PRIMARY KEY, customer TEXT, amount INT)"
        )
        db.executemany(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?)",
            [(o.id, o.customer_id, o.amount) for o in orders],
        )
    return len(orders)


@flow(name="process-orders")
def process_orders(batch: int, max_value: int = 20) -> str:
    future = fetch_orders.submit(batch)
    state = future.wait()
    if not state.is_completed():
        return "fetch failed"
    orders = [o for o in future.result() if o.amount >= max_value]
    if not orders:
        get_run_logger().info("batch %s: no orders worth loading", batch)
        return "skipped"
    return f"loaded {load(orders)}"


def main(runs: int) -> None:
    outcomes: dict[str, int] = {}
    for batch in range(runs):
        outcome = process_orders(batch).split(" ")[0]
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    print(f"{runs} flow runs: {outcomes}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
