"""A store with real runs in it: real flows run through a real RunWriter."""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass

import orjson
import pydantic

from eventflow import EventInfo, flow, get_run_logger, task
from eventflow._engine import run_flow
from eventflow._logging import configure_logging
from eventflow._store._engine import make_engine
from eventflow._store._migrate import upgrade
from eventflow._store._results import run_results
from eventflow._store._writer import RunWriter

SECRET = "hunter2-very-secret"

PARTITIONS = {
    "orders/0": {"lag": 4, "position": 5, "stored": 5, "committed": 4},
    "orders/1": {"lag": 3, "position": 2, "stored": 2, "committed": 2},
}
"""Each worker's partitions of the "orders" subscription (lags sum to its lag, 7)."""


@task
def extract(n: int) -> list[int]:
    get_run_logger().info("extracting %d rows", n)
    return list(range(n))


@task
def transform(rows: list[int], factor: int) -> list[int]:
    return [r * factor for r in rows]


@task(retries=1, retry_delay_seconds=0)
def load(doubled: list[int], tripled: list[int]) -> int:
    if sum(doubled) < 0:
        raise ValueError("negative total")
    return len(doubled) + len(tripled)


@task
def audit() -> None:
    get_run_logger().info("audited")


@flow(name="etl")
def etl(n: int) -> int:
    """Four tasks, three data edges into `load` and one wait_for edge."""
    rows = extract.submit(n)
    doubled = transform.submit(rows, 2)
    tripled = transform.submit(rows, 3)
    total = load.submit(doubled, tripled)
    audit.submit(wait_for=[total]).wait()
    return total.result()


@task(retries=1, retry_delay_seconds=0)
def charge(amount: int, password: str) -> None:
    raise RuntimeError(f"card declined for {amount} (password {password})")


class Order(pydantic.BaseModel):
    id: str
    amount: int
    password: str
    customer: dict[str, str]


@flow(name="process-order")
def process_order(order: Order) -> str:
    get_run_logger().info("order %s, password %s", order.id, order.password)
    if order.amount > 100:
        charge(order.amount, order.password)
    return "ok"


@dataclass
class Runs:
    """Ids of the runs the store holds."""

    etl_ok: list[str]
    order_ok: list[str]
    order_failed: str
    order_invalid: str
    worker_alive: str
    worker_dead: str


def order_payload(order_id: str, amount: int) -> bytes:
    return orjson.dumps(
        {
            "id": order_id,
            "amount": amount,
            "password": SECRET,
            "customer": {"name": "Ada", "api_key": "key-abcdef-123"},
        }
    )


async def _fill(url: str) -> Runs:
    configure_logging()  # as the default writer does: run logs go to the store
    await asyncio.to_thread(upgrade, url)
    writer = RunWriter(url, flush_interval=0.01)
    await asyncio.to_thread(writer.start)
    try:
        etl_ok = [(await run_flow(etl, writer, kwargs={"n": n})).run_id for n in (3, 5)]
        order_ok = []
        for offset, amount in enumerate((10, 20, 30)):
            state = await _order(writer, offset, f"o{offset}", amount, key=f"c{offset % 2}")
            order_ok.append(state)
        failed = await _order(writer, 3, "o3", 500, key="c1")
        invalid_payload = orjson.dumps({"id": "o4", "amount": "lots", "password": SECRET})
        invalid = await run_flow(
            process_order,
            writer,
            raw_parameters=invalid_payload,
            event=EventInfo(
                "orders", "orders/0/4", key="c0", partition=0, offset=4, payload=invalid_payload
            ),
        )
        now = time.time()
        for worker_id, heartbeat in (("w-alive", now), ("w-dead", now - 7200)):
            writer.put_worker(
                {
                    "id": worker_id,
                    "hostname": "host",
                    "pid": os.getpid(),
                    "started_at": heartbeat - 60,
                    "heartbeat_at": heartbeat,
                    "stopped_at": None,
                }
            )
            writer.put_source_status(
                {
                    "worker_id": worker_id,
                    "subscription": "orders->process-order",
                    "source": "orders",
                    "flow_name": "process-order",
                    "received": 5,
                    "completed": 3,
                    "failed": 2,
                    "dead_lettered": 2,
                    "in_flight": 0,
                    "lag": 7,
                    "last_event_at": heartbeat,
                    "last_error": "card declined",
                    "last_error_at": heartbeat,
                    "updated_at": heartbeat,
                    "state": "running" if worker_id == "w-alive" else "stalled",
                    "state_since": heartbeat - 30,
                    "store_up": True,
                    "partitions": orjson.dumps(PARTITIONS).decode(),
                }
            )
        await writer.flush()
    finally:
        await asyncio.to_thread(writer.close)
    assert invalid.run_id is not None
    return Runs(etl_ok, order_ok, failed, invalid.run_id, "w-alive", "w-dead")


async def _order(writer: RunWriter, offset: int, order_id: str, amount: int, key: str) -> str:
    payload = order_payload(order_id, amount)
    state = await run_flow(
        process_order,
        writer,
        raw_parameters=payload,
        event=EventInfo(
            "orders",
            f"orders/0/{offset}",
            key=key,
            partition=0,
            offset=offset,
            payload=payload,
            timestamp=time.time(),
        ),
    )
    assert state.run_id is not None
    return state.run_id


async def _resumed_etl(url: str) -> tuple[str, str]:
    await asyncio.to_thread(upgrade, url)
    writer = RunWriter(url, flush_interval=0.01)
    await asyncio.to_thread(writer.start)
    engine = make_engine(url)
    try:
        first = await run_flow(etl, writer, kwargs={"n": 3})
        await writer.flush()
        assert first.run_id is not None
        resume = await run_results(engine, first.run_id)
        again = await run_flow(etl, writer, kwargs={"n": 3}, resume=resume)
        await writer.flush()
    finally:
        await engine.dispose()
        await asyncio.to_thread(writer.close)
    assert again.run_id is not None and again.result() == first.result()
    return first.run_id, again.run_id


def resumed_etl(url: str) -> tuple[str, str]:
    """A run of `etl`, and a second run that resumed it (every task run reused)."""
    return asyncio.run(_resumed_etl(url))


def fill_store(url: str) -> Runs:
    """Run the flows into the store at `url` (creating its schema); their ids."""
    return asyncio.run(_fill(url))
