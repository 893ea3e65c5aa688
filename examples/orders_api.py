"""The order generator of the orders pipeline, as a JSON API that `HttpPollSource` polls.

    uvicorn examples.orders_api:app --port 8000
    curl 'http://127.0.0.1:8000/orders?max_value=20'
    # {"orders": [{"id": "o-3f2a...", "customer_id": "c7", "amount": 13}, ...]}

`GET /orders` answers a random list of new orders (each id unique; sometimes
none). Query parameters: `max_value` (largest amount, default 100),
`max_orders` (largest list, default 5), and failure injection,
`failure_rate` (the fraction of answers that are HTTP 503, with `Retry-After: 1`),
`slow_rate` and `slow_seconds` (the fraction of answers delayed, and by how
long). The failure settings default to the environment variables
`ORDERS_API_FAILURE_RATE`, `ORDERS_API_SLOW_RATE` and `ORDERS_API_SLOW_SECONDS`.
`GET /healthz` answers `ok`. A plain ASGI callable: uvicorn is the only dependency.

Poll it into tracked runs of the pipeline's flow:

    app.subscribe(
        HttpPollSource("http://127.0.0.1:8000/orders", interval=1.0,
                       items="orders", id_field="id", key_field="customer_id"),
        process_order,
    )
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass
class OrdersApi:
    """The ASGI app; `served` holds every order id answered, for whoever checks the pipeline."""

    failure_rate: float = 0.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    retry_after: int = 1
    """Seconds in the `Retry-After` header of an injected failure (0: no header)."""
    seed: int | None = None
    served: list[str] = field(default_factory=list)
    requests: int = 0
    failures: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    @classmethod
    def from_env(cls) -> OrdersApi:
        return cls(
            failure_rate=_env_float("ORDERS_API_FAILURE_RATE", 0.0),
            slow_rate=_env_float("ORDERS_API_SLOW_RATE", 0.0),
            slow_seconds=_env_float("ORDERS_API_SLOW_SECONDS", 2.0),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/healthz":
            await _respond(send, 200, b"ok", "text/plain")
        elif path != "/orders":
            await _respond(send, 404, b'{"error": "not found"}')
        elif method != "GET":
            await _respond(send, 405, b'{"error": "method not allowed"}')
        else:
            await self._orders(scope, send)

    async def _orders(self, scope: Scope, send: Send) -> None:
        self.requests += 1
        query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode()).items()}
        try:
            max_value = int(query.get("max_value", 100))
            max_orders = int(query.get("max_orders", 5))
            failure_rate = float(query.get("failure_rate", self.failure_rate))
            slow_rate = float(query.get("slow_rate", self.slow_rate))
            slow_seconds = float(query.get("slow_seconds", self.slow_seconds))
        except ValueError as error:
            await _respond(send, 400, orjson.dumps({"error": str(error)}))
            return
        if max_value < 0 or max_orders < 0:
            await _respond(send, 400, b'{"error": "max_value and max_orders must be >= 0"}')
            return
        rng = self._random
        if rng.random() < slow_rate:
            await asyncio.sleep(slow_seconds)
        if rng.random() < failure_rate:
            self.failures += 1
            retry = [(b"retry-after", str(self.retry_after).encode())] if self.retry_after else []
            await _respond(send, 503, b'{"error": "injected failure"}', headers=retry)
            return
        orders: list[dict[str, Any]] = [
            {
                "id": f"o-{uuid.UUID(int=rng.getrandbits(128)).hex}",
                "customer_id": f"c{rng.randrange(10)}",
                "amount": rng.randint(0, max_value),
            }
            for _ in range(rng.randint(0, max_orders))
        ]
        self.served.extend(o["id"] for o in orders)
        await _respond(send, 200, orjson.dumps({"orders": orders}))


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


app = OrdersApi.from_env()


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
