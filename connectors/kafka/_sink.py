"""KafkaSink: a producer; `send` publishes at once (at least once), `publish` with the run.

`send` returns once the broker acknowledged the message. `publish` keeps the
message with the flow run that makes it; it is sent once the run completed,
exactly once, by the worker's outbox relay in Kafka transactions
(eventflow/_outbox.py, connectors/kafka/_relay.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaProducer

from eventflow.runtime import (
    TRACING,
    PublishError,
    Sink,
    publish_to_outbox,
    record_write,
    register_outbox,
)

from ._config import KafkaConnection, _connection
from ._errors import _bounded, _stop_client
from ._relay import KafkaTransport


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
        transactional_id: str | None = None,
        max_message_bytes: int = 1_000_000,
    ) -> None:
        self.topic = topic
        self.send_timeout = send_timeout
        self.connection = _connection(connection, bootstrap_servers)
        self.transactional_id = transactional_id or f"eventflow-outbox.{topic}"
        """The relay's Kafka transactional id: one per topic and store (give two apps
        with stores of their own that publish to one topic an id each)."""
        self.max_message_bytes = max_message_bytes
        """A larger message fails its `publish` (it could never be published)."""
        self.linger_ms = linger_ms
        self._acks = acks
        self._linger_ms = linger_ms
        register_outbox(self.dataset, self._transport)
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

    @property
    def dataset(self) -> str:
        """What the sink writes, as lineage names it: `kafka:<topic>`."""
        return f"kafka:{self.topic}"

    def _transport(self) -> KafkaTransport:
        return KafkaTransport(self)

    def publish(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> str:
        """Publish `value` once the current flow run completes, exactly once; its message id.

        Nothing is sent now: the message is stored with the run's COMPLETED state
        and the worker's relay sends it in a Kafka transaction, with header
        `eventflow-message-id` (the same for every run of the same event). A run
        that does not complete publishes nothing. Call it in a flow or a task
        (sync or async); outside a run it raises PublishError (use `send`). A
        message over `max_message_bytes` raises PublishError (the run fails).
        """
        size = len(value) + len(key or b"") + sum(len(n) + len(v) for n, v in headers)
        if size > self.max_message_bytes:
            raise PublishError(
                f"a message of {size} bytes for {self.topic} is over the sink's"
                f" max_message_bytes ({self.max_message_bytes}): it could never be published"
            )
        record_write(self.dataset)  # lineage: the flow writes the topic, nothing to declare
        return publish_to_outbox(self.dataset, value, key, headers)

    async def send(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Publish; KafkaUnavailableError if the broker did not acknowledge it in `send_timeout`.

        While tracing is on, each message gets a PRODUCER span, its context in the
        message's `traceparent` header (see eventflow's tracing guide).
        """
        record_write(self.dataset)  # lineage, as `publish`
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
