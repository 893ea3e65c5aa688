"""KafkaSink: a producer; each `send` returns once the broker acknowledged it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from eventflow.runtime import TRACING, Sink

from ._config import KafkaConnection, _connection
from ._errors import _bounded, _stop_client


class KafkaSink(Sink):
    """Publishes to a topic; each `send` returns once the broker acknowledged the message."""

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str | Sequence[str] | None = None,
        connection: KafkaConnection | None = None,
        acks: Literal[0, 1, "all"] = "all",
        linger_ms: int = 5,
        send_timeout: float = 30.0,
    ) -> None:
        self.topic = topic
        self.send_timeout = send_timeout
        self.connection = _connection(connection, bootstrap_servers)
        self._acks = acks
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    **self.connection.client_options(),
                    acks=self._acks,
                    linger_ms=self._linger_ms,
                    enable_idempotence=self._acks == "all",
                )
                try:
                    await _bounded(producer.start(), f"producer for {self.topic}")
                except BaseException:
                    # do not leak its connections; the caller retries
                    await _stop_client(producer, f"producer for {self.topic}")
                    raise
                self._producer = producer

    async def stop(self) -> None:
        async with self._lock:
            if self._producer is not None:
                producer, self._producer = self._producer, None
                await _stop_client(producer, f"producer for {self.topic}")

    async def send(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Publish; KafkaUnavailableError if the broker did not acknowledge it in `send_timeout`.

        While tracing is on, each message gets a PRODUCER span, its context in the
        message's `traceparent` header (see eventflow's tracing guide).
        """
        if self._producer is None:
            await self.start()
        if TRACING.on:
            key_text = None if key is None else key.decode("utf-8", "replace")
            with TRACING.producer_span(
                "kafka", self.topic, headers, **{"messaging.kafka.message.key": key_text}
            ) as traced:
                sent = await self._send(value, key, traced)
                TRACING.published(sent.partition, sent.offset)
            return
        await self._send(value, key, headers)

    async def _send(
        self, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> Any:
        assert self._producer is not None
        return await _bounded(
            self._producer.send_and_wait(self.topic, value, key=key, headers=list(headers) or None),
            f"send to {self.topic}",
            self.send_timeout,
        )
