"""aiokafka's errors become eventflow's at the connector's edge (connectors/kafka/)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import IllegalStateError

from connectors.kafka import KafkaBrokerError, KafkaSource, KafkaUnavailableError
from connectors.kafka._errors import _stop_client
from connectors.kafka._source import _Rebalance
from eventflow import EventflowError
from eventflow.runtime import Event, EventSink, Partition
from tests._kafka import Kafka


class _Sink(EventSink):
    """The runtime's side, as far as a rebalance asks it: offsets stored for partition 0."""

    stopping = False

    async def deliver(self, events: Sequence[Event]) -> None: ...

    def paused(self, assigned: Iterable[Partition]) -> set[Partition]:
        return set()

    def accepting(self) -> bool:
        return True

    async def assigned(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        return {("orders", 0): 42}

    async def revoked(self, partitions: Sequence[Partition]) -> Mapping[Partition, int]:
        return {}


async def test_an_aiokafka_error_in_a_rebalance_reaches_the_runtime_as_an_eventflow_error(
    kafka: Kafka,
) -> None:
    # a real, connected aiokafka consumer refuses to seek a partition it was not assigned
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap)
    await consumer.start()
    consumer.assign([TopicPartition("other", 0)])
    source = KafkaSource("orders", group_id="g", bootstrap_servers=kafka.bootstrap)
    try:
        with pytest.raises(
            KafkaBrokerError, match=r"kafka:orders: seek: IllegalStateError"
        ) as raised:
            await _Rebalance(source, consumer, _Sink()).on_partitions_assigned([])
    finally:
        await _stop_client(consumer, "test consumer")
    assert isinstance(raised.value, EventflowError)
    assert isinstance(raised.value.__cause__, IllegalStateError)


def test_the_narrower_kafka_errors_are_broker_errors() -> None:
    assert issubclass(KafkaUnavailableError, KafkaBrokerError)
    assert issubclass(KafkaBrokerError, EventflowError)
