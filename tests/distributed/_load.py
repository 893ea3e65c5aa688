"""Orders produced at a steady rate while the test breaks things, as a real source would."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

import orjson
from aiokafka import AIOKafkaProducer


class SteadyProducer:
    """Sends `total` orders over `keys` customers at `rate` per second.

    A send that fails (the broker is being bounced) is retried until it is
    acknowledged, within `give_up` seconds for the whole run: the topic may then
    hold an order twice, at two positions (two events, each to run once).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        total: int,
        rate: float,
        keys: int = 100,
        seed: int = 0,
        give_up: float = 600,
    ) -> None:
        self.bootstrap, self.topic = bootstrap, topic
        self.total, self.rate, self.keys = total, rate, keys
        self.random = random.Random(seed)
        self.give_up = give_up
        self.sent = 0
        self.last_sent_at = 0.0
        """When the last order was acknowledged (epoch s): nothing new to run after it."""
        self.send_errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def wait(self, timeout: float) -> None:
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _orders(self) -> list[tuple[bytes, bytes]]:
        seq: dict[str, int] = {}
        orders = []
        for i in range(self.total):
            customer = f"c{self.random.randrange(self.keys)}"
            seq[customer] = seq.get(customer, 0) + 1
            order = {
                "id": f"o{i}",
                "customer_id": customer,
                "amount": i % 100,
                "seq": seq[customer],
            }
            orders.append((customer.encode(), orjson.dumps(order)))
        return orders

    async def _run(self) -> None:
        orders = self._orders()
        deadline = time.monotonic() + self.give_up
        producer = await self._producer(deadline)
        try:
            started = time.monotonic()
            step = max(1, int(self.rate / 10))
            for i in range(0, len(orders), step):
                # keep to the schedule: a slow send (a bounce) is caught up afterwards
                due = started + i / self.rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                for key, value in orders[i : i + step]:
                    while True:
                        try:
                            await asyncio.wait_for(
                                producer.send_and_wait(self.topic, value, key=key), 15
                            )
                            break
                        except Exception:
                            self.send_errors += 1
                            if time.monotonic() > deadline:
                                raise
                            await asyncio.sleep(0.5)
                    self.sent += 1
                    self.last_sent_at = time.time()
        finally:
            await producer.stop()

    async def _producer(self, deadline: float) -> AIOKafkaProducer:
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, request_timeout_ms=10000
            )
            try:
                await asyncio.wait_for(producer.start(), 20)
                return producer
            except Exception:
                await producer.stop()
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(1)
