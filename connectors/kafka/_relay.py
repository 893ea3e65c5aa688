"""The outbox's Kafka transport: each batch of messages in one Kafka transaction.

The producer has a stable transactional id (the sink's), so starting it fences
any earlier producer with that id: a relay that froze or was cut off can
commit nothing after its successor started. Each transaction also commits an
offset, the batch's number, for the marker group `eventflow-outbox.<id>` on
partition 0 of the topic: atomically with the messages, so after a crash the
next relay reads the last batch the topic took (`committed`) instead of
guessing, and does not send it twice (eventflow/_runtime/_relay.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from eventflow.runtime import decode_headers, outbox_headers

from ._errors import _bounded, _stop_client

if TYPE_CHECKING:
    from ._sink import KafkaSink


class KafkaTransport:
    """Sends outbox batches to a sink's topic in transactions (see the module)."""

    def __init__(self, sink: KafkaSink) -> None:
        self.sink = sink
        self.topic = sink.topic
        self.marker_group = f"eventflow-outbox.{sink.transactional_id}"
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        sink = self.sink
        producer = AIOKafkaProducer(
            **sink.connection.client_options(),
            acks="all",
            enable_idempotence=True,
            linger_ms=sink.linger_ms,
            transactional_id=sink.transactional_id,
            max_request_size=sink.max_message_bytes + 64 * 1024,
        )
        self._producer = producer
        what = f"transactional producer for {self.topic}"
        await _bounded(producer.start(), what)
        # an empty transaction waits for the producer id: from then on the broker has
        # fenced any earlier producer with this id and settled its open transaction
        await _bounded(producer.begin_transaction(), what)
        await _bounded(producer.abort_transaction(), what)

    async def committed(self) -> int:
        consumer = AIOKafkaConsumer(
            **self.sink.connection.client_options(),
            group_id=self.marker_group,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        what = f"the outbox marker of {self.topic}"
        try:
            await _bounded(consumer.start(), what)
            offset = await _bounded(consumer.committed(TopicPartition(self.topic, 0)), what)
        finally:
            await _stop_client(consumer, what)
        return int(offset or 0)

    async def send(self, rows: Sequence[dict[str, Any]], attempt: int) -> None:
        producer = self._producer
        assert producer is not None
        await _bounded(self._send(producer, rows, attempt), f"publish to {self.topic}",
                       self.sink.send_timeout)  # fmt: skip

    async def _send(
        self, producer: AIOKafkaProducer, rows: Sequence[dict[str, Any]], attempt: int
    ) -> None:
        await producer.begin_transaction()
        destination = self.sink.dataset
        futures = []
        for row in rows:
            headers = decode_headers(row["headers"])
            headers += outbox_headers(row["message_id"], destination, attempt)
            futures.append(
                await producer.send(self.topic, row["value"], key=row["key"], headers=headers)
            )
        await asyncio.gather(*futures)
        await producer.send_offsets_to_transaction(
            {TopicPartition(self.topic, 0): attempt}, self.marker_group
        )
        await producer.commit_transaction()

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop_client(producer, f"transactional producer for {self.topic}")
