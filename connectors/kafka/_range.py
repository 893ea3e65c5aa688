"""KafkaRangeSource: a finite range of a topic (offsets or times), for backfills."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition

from eventflow import ConfigurationError
from eventflow.runtime import EventSink, Source

from ._config import KafkaConnection, _connection
from ._errors import _bounded, _stop_client, _translated, logger
from ._source import _event


class KafkaRangeSource(Source):
    """A finite slice of a topic, for backfills: an offset range or a time range per partition.

    Offsets: `from_offset` (inclusive) to `to_offset` (exclusive), in every
    partition read, clamped to what the partition holds. Times: records from
    `since` (inclusive) to `until` (exclusive), found with `offsets_for_times`
    (by record timestamp; the range ends at the first record at or after
    `until`). Without an end the range ends at the partition's end when the
    backfill starts, so a live topic does not keep it running. Partitions are
    assigned directly (no consumer group in Kafka); with a `group_id` the
    runtime stores the next offsets with the runs, so the same backfill again
    resumes where it stopped. `run` returns once every partition reached its end.
    `total` counts offsets: a compacted or transactional topic holds fewer records.
    """

    finite = True

    messaging_system = "kafka"

    def __init__(
        self,
        topic: str,
        *,
        bootstrap_servers: str | Sequence[str] | None = None,
        connection: KafkaConnection | None = None,
        group_id: str | None = None,
        partitions: Sequence[int] | None = None,
        from_offset: int | None = None,
        to_offset: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        max_batch: int = 2000,
    ) -> None:
        if (from_offset is not None or to_offset is not None) and (
            since is not None or until is not None
        ):
            raise ConfigurationError("give an offset range or a time range, not both")
        for moment in (since, until):
            if moment is not None and moment.tzinfo is None:
                raise ConfigurationError("since and until must be timezone-aware datetimes")
        self.topic = topic
        self.partitions = list(partitions) if partitions is not None else None
        self.name = (
            f"kafka:{topic}{_describe_range(self.partitions, from_offset, to_offset, since, until)}"
        )
        """Names the slice: a backfill's default progress key, so another range starts afresh."""
        self.group_id = group_id
        self.connection = _connection(connection, bootstrap_servers)
        self.from_offset = from_offset
        self.to_offset = to_offset
        self.since = since
        self.until = until
        self.max_batch = max_batch
        self.total: int | None = None
        self.already_done = 0
        self.ranges: dict[int, tuple[int, int]] = {}
        """Per partition: the first offset of the range and the end (exclusive)."""

    async def run(self, sink: EventSink) -> None:
        consumer = AIOKafkaConsumer(
            **self.connection.client_options(),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        try:
            await _bounded(consumer.start(), f"{self.name}: connect")
            await self._read(consumer, sink)
        finally:
            await _stop_client(consumer, self.name)

    async def _read(self, consumer: AIOKafkaConsumer, sink: EventSink) -> None:
        tps = await self._partitions(consumer)
        with _translated(f"{self.name}: assign"):
            consumer.assign(tps)
        self.ranges = await self._ranges(consumer, tps)
        stored = await sink.assigned([(self.topic, tp.partition) for tp in tps])
        positions: dict[TopicPartition, int] = {}
        done = 0
        for tp in tps:
            start, end = self.ranges[tp.partition]
            position = max(start, stored.get((self.topic, tp.partition), start))
            done += min(position, end) - start
            if position < end:
                positions[tp] = position
                consumer.seek(tp, position)
        self.total = sum(end - start for start, end in self.ranges.values())
        self.already_done = done
        logger.info(
            "%s: reading %s",
            self.name,
            ", ".join(f"[{p}] {s}..{e}" for p, (s, e) in sorted(self.ranges.items())),
        )
        paused: set[TopicPartition] = set()
        while positions and not sink.stopping:
            wanted = {
                TopicPartition(t, p)
                for t, p in sink.paused([(tp.topic, tp.partition) for tp in positions])
            }
            wanted |= set(tps) - set(positions)  # finished partitions stay paused
            if wanted - paused:
                consumer.pause(*(wanted - paused))
            if paused - wanted:
                consumer.resume(*(paused - wanted))
            paused = wanted
            with _translated(f"{self.name}: fetch"):
                batch = await consumer.getmany(timeout_ms=100, max_records=self.max_batch)
            events = [
                _event(record)
                for tp, records in batch.items()
                if tp in positions
                for record in records
                if record.offset < self.ranges[tp.partition][1]
            ]
            if events:
                await sink.deliver(events)
            for tp in [tp for tp in positions if tp not in paused]:
                position = await _bounded(consumer.position(tp), f"{self.name}: position")
                if position >= self.ranges[tp.partition][1]:
                    del positions[tp]

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        # the consumer's public `topics()` does not keep the partitions it fetched
        cluster = await _bounded(consumer._client.fetch_all_metadata(), f"{self.name}: metadata")
        known = cluster.partitions_for_topic(self.topic)
        if not known:
            raise ConfigurationError(f"topic {self.topic!r} does not exist")
        wanted = self.partitions if self.partitions is not None else sorted(known)
        missing = set(wanted) - set(known)
        if missing:
            raise ConfigurationError(f"topic {self.topic!r} has no partition {sorted(missing)}")
        return [TopicPartition(self.topic, p) for p in wanted]

    async def _ranges(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition]
    ) -> dict[int, tuple[int, int]]:
        beginning = await _bounded(consumer.beginning_offsets(tps), f"{self.name}: beginnings")
        end = await _bounded(consumer.end_offsets(tps), f"{self.name}: ends")
        starts = await self._offsets_at(consumer, tps, self.since, end)
        ends = await self._offsets_at(consumer, tps, self.until, end)
        ranges = {}
        for tp in tps:
            first, last = beginning[tp], end[tp]
            start = max(first, self.from_offset or 0, starts.get(tp, first))
            stop = min(last, self.to_offset if self.to_offset is not None else last)
            stop = min(stop, ends.get(tp, last))
            ranges[tp.partition] = (start, max(start, stop))
        return ranges

    @staticmethod
    async def _offsets_at(
        consumer: AIOKafkaConsumer,
        tps: list[TopicPartition],
        moment: datetime | None,
        end: Mapping[TopicPartition, int],
    ) -> dict[TopicPartition, int]:
        """The first offset at or after `moment` per partition (the end if none is)."""
        if moment is None:
            return {}
        found = await _bounded(
            consumer.offsets_for_times({tp: moment.timestamp() * 1000 for tp in tps}),
            "offsets for times",
        )
        return {tp: found[tp].offset if found.get(tp) is not None else end[tp] for tp in tps}


def _describe_range(
    partitions: Sequence[int] | None,
    from_offset: int | None,
    to_offset: int | None,
    since: datetime | None,
    until: datetime | None,
) -> str:
    """`[p=0,1][5:12]`, `[2026-11-24T00:00:00+00:00..]`: a range's part of a source name."""
    text = f"[p={','.join(map(str, partitions))}]" if partitions is not None else ""
    if from_offset is not None or to_offset is not None:
        start = "" if from_offset is None else str(from_offset)
        text += f"[{start}:{'' if to_offset is None else to_offset}]"
    if since is not None or until is not None:
        first = since.isoformat() if since else ""
        text += f"[{first}..{until.isoformat() if until else ''}]"
    return text
