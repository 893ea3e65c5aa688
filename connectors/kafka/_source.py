"""KafkaSource: a consumer-group source (aiokafka), its rebalances told to the runtime.

The source only translates: records become `Event`s, the runtime's pause set
becomes `pause()`/`resume()` (polling never stops, so the group does not
rebalance while the worker is busy), rebalances become `assigned`/`revoked`
calls, and offsets the runtime made durable are committed to Kafka so lag
tools see them. Offsets live first in the run store; on assignment the
consumer seeks to them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError

from eventflow import ConfigurationError
from eventflow.runtime import Event, EventSink, Partition, Sink, Source

from ._config import KafkaConnection, _connection
from ._errors import (
    KafkaStalledError,
    KafkaUnavailableError,
    _bounded,
    _cancelled,
    _stop_client,
    _translated,
    logger,
)
from ._sink import KafkaSink

_PROBE_TIMEOUT = 5.0
"""Seconds the broker gets to answer a probe (it answers in milliseconds when it is there)."""


_COMMIT_FAILURES_BEFORE_REPLACING = 3


class KafkaSource(Source):
    """Consumes topics as a member of a consumer group.

    Auto-commit is off: offsets are committed only once the runs before them
    are durable. `group_instance_id` enables static membership (a restart
    within the session timeout keeps the assignment); `rebalance_timeout_ms`
    is how long the group waits for members to finish revoked work.
    Failed events go to `dead_letter_topic` (default `<first topic>.dlq`)
    unless the subscription names another sink. A consumer that fetches
    nothing for `stall_timeout_s` while its partitions have records to read
    is stopped and replaced (its partitions are revoked first).

    Every call to the broker is bounded. While the consumer fetches nothing,
    the broker is asked for the partitions' ends every `probe_interval_s`:
    a broker that does not answer makes the subscription `reconnecting` (one
    WARNING, a summary every 30 s, one INFO when it is back). A commit gets
    `commit_timeout_s`.

    `isolation_level` is `read_committed`: messages of Kafka transactions that
    were aborted (a relay of `KafkaSink.publish` that crashed mid-transaction)
    are never delivered, and a partition is read up to its last stable offset.
    """

    messaging_system = "kafka"

    def __init__(
        self,
        *topics: str,
        group_id: str,
        bootstrap_servers: str | Sequence[str] | None = None,
        connection: KafkaConnection | None = None,
        group_instance_id: str | None = None,
        auto_offset_reset: Literal["earliest", "latest"] = "earliest",
        dead_letter_topic: str | None = None,
        max_batch: int = 2000,
        session_timeout_ms: int = 10_000,
        heartbeat_interval_ms: int = 3_000,
        rebalance_timeout_ms: int = 30_000,
        max_poll_interval_ms: int = 300_000,
        stall_timeout_s: float = 30.0,
        probe_interval_s: float = 5.0,
        commit_timeout_s: float = 10.0,
        isolation_level: Literal["read_committed", "read_uncommitted"] = "read_committed",
    ) -> None:
        if not topics:
            raise ConfigurationError("KafkaSource needs at least one topic")
        self.topics = topics
        self.group_id = group_id
        self.name = f"kafka:{','.join(topics)}"
        self.connection = _connection(connection, bootstrap_servers)
        self.dead_letter_topic = dead_letter_topic or f"{topics[0]}.dlq"
        self.max_batch = max_batch
        self._consumer_options: dict[str, Any] = {
            "group_id": group_id,
            "group_instance_id": group_instance_id,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            "session_timeout_ms": session_timeout_ms,
            "heartbeat_interval_ms": heartbeat_interval_ms,
            "rebalance_timeout_ms": rebalance_timeout_ms,
            "max_poll_interval_ms": max_poll_interval_ms,
            "isolation_level": isolation_level,
        }
        self.stall_timeout_s = stall_timeout_s
        self.probe_interval_s = probe_interval_s
        self.commit_timeout_s = commit_timeout_s
        self._consumer: AIOKafkaConsumer | None = None
        self._paused: set[TopicPartition] = set()
        self._ready: set[TopicPartition] = set()
        """Assigned partitions whose stored offsets the runtime has loaded: only these are read."""
        self._positions: dict[TopicPartition, int] = {}  # next offset to deliver, for lag()
        self._ends: dict[TopicPartition, int] = {}  # partition ends the last probe saw
        self._failed_commits = 0
        self._replace: KafkaStalledError | None = None
        """Set when the consumer must be replaced (the run loop raises it)."""

    def dead_letter_sink(self) -> Sink:
        return KafkaSink(self.dead_letter_topic, connection=self.connection)

    async def run(self, sink: EventSink) -> None:
        consumer = AIOKafkaConsumer(**self.connection.client_options(), **self._consumer_options)
        self._ready = set()
        self._replace = None
        consumer.subscribe(topics=list(self.topics), listener=_Rebalance(self, consumer, sink))
        try:
            await _bounded(consumer.start(), f"{self.name}: connect")
        except BaseException:
            await _stop_client(consumer, self.name)
            raise
        self._consumer = consumer
        self._paused = set()
        self.record_ok()
        last_records = last_probe = time.monotonic()
        try:
            while not sink.stopping:
                if self._replace is not None:
                    raise self._replace
                if self._apply_pauses(consumer, sink):
                    last_records = time.monotonic()  # a resumed partition's first fetch takes time
                batch = await self._fetch(consumer)
                now = time.monotonic()
                if not batch:
                    if now - last_probe >= self.probe_interval_s:
                        back = await self._probe(consumer, idle=now - last_records)
                        last_probe = time.monotonic()  # a probe may wait for its answer
                        if back:  # the broker is back: give the consumer time to fetch
                            last_records = last_probe
                        self._give_up_if_gone()
                    continue
                last_records = last_probe = now
                self.record_ok()
                for tp in [tp for tp in batch if tp not in self._ready]:
                    # fetched while its assignment was still being set up: read it again later
                    consumer.seek(tp, batch.pop(tp)[0].offset)
                events = [
                    Event(  # positional: per event, and keywords cost a third more
                        f"{record.topic}/{record.partition}/{record.offset}",  # id
                        record.value if record.value is not None else b"",  # value
                        record.key.decode("utf-8", "replace") if record.key is not None else None,
                        record.topic,  # stream
                        record.partition,
                        record.offset,
                        record.timestamp / 1000 if record.timestamp is not None else None,
                        record.headers or (),
                    )
                    for records in batch.values()
                    for record in records
                ]
                for tp, records in batch.items():
                    self._positions[tp] = records[-1].offset + 1
                await sink.deliver(events)
        except BaseException:
            self._consumer = None
            try:
                assigned = consumer.assignment()
                if assigned and not sink.stopping:
                    await sink.revoked([(tp.topic, tp.partition) for tp in assigned])
            finally:
                await _stop_client(consumer, self.name)  # never leave a consumer behind
            raise

    def _give_up_if_gone(self) -> None:
        """Raise KafkaUnavailableError once the broker has been away longer than the session.

        By then the group has dropped this member anyway, and an idle aiokafka
        consumer whose metadata went stale retries it in a tight loop (a whole
        core): the supervisor starts a new consumer once the broker answers.
        """
        since = self.failing_since
        session = self._consumer_options["session_timeout_ms"] / 1000
        if since is not None and time.time() - since > session:
            raise KafkaUnavailableError(
                f"{self.name}: no answer from the broker for {time.time() - since:.0f}s, longer"
                f" than the group session ({session:g}s); connecting anew"
            )

    async def _fetch(self, consumer: AIOKafkaConsumer) -> dict[TopicPartition, list[Any]]:
        """`getmany`, with aiokafka's stray CancelledError turned into an error of ours.

        When aiokafka's group coordination task has ended by cancellation,
        every `getmany` re-raises that CancelledError (`check_errors`), though
        nobody cancelled us: taken for a shutdown, it ended the source silently.
        """
        try:
            with _translated(f"{self.name}: fetch"):
                batch: dict[TopicPartition, list[Any]] = await consumer.getmany(
                    timeout_ms=100, max_records=self.max_batch
                )
        except asyncio.CancelledError:
            if _cancelled():
                raise  # a real cancellation: the runtime is stopping us
            raise KafkaStalledError(
                "the consumer's group coordination ended (aiokafka raised CancelledError)"
            ) from None
        return batch

    async def _probe(self, consumer: AIOKafkaConsumer, idle: float) -> bool:
        """Ask the broker for the ends of our partitions (the group's topics without any).

        A failure is recorded (the subscription shows `reconnecting`); success
        ends an outage. Records idle for `stall_timeout_s` while a readable
        partition has some to read raise KafkaStalledError: the consumer is
        replaced. True if this probe ended an outage.
        """
        was_failing = self.failing
        assigned = consumer.assignment()
        try:
            if assigned:
                ends = await _bounded(
                    consumer.end_offsets(list(assigned)), f"{self.name}: ends", _PROBE_TIMEOUT
                )
                self._ends.update(ends)
            else:
                await _bounded(consumer.topics(), f"{self.name}: metadata", _PROBE_TIMEOUT)
        except KafkaUnavailableError as error:
            self.record_error(error)
            self._failed_commits = 0  # the broker is away: that explains failed commits
            return False
        self.record_ok()
        if was_failing or idle < self.stall_timeout_s:
            return was_failing
        readable = (assigned - self._paused) & self._ready
        lagging = []
        for tp in readable:
            position = self._positions.get(tp)
            if position is None:
                try:
                    position = await _bounded(consumer.position(tp), f"{self.name}: position")
                except (KafkaUnavailableError, IllegalStateError):
                    continue
            if position < ends.get(tp, position):
                lagging.append(tp)
        if lagging:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(lagging))
            raise KafkaStalledError(
                f"no records for {idle:.0f}s although {names} have some to read"
            )
        return False

    def _apply_pauses(self, consumer: AIOKafkaConsumer, sink: EventSink) -> bool:
        """Pause what the runtime cannot take now, resume the rest; True if any resumed."""
        assigned = consumer.assignment()
        wanted = {
            TopicPartition(t, p)
            for t, p in sink.paused([(tp.topic, tp.partition) for tp in assigned])
        }
        wanted |= assigned - self._ready
        if self.failing:
            # the broker is away: aiokafka's fetcher would retry its metadata thousands
            # of times a second for readable partitions; the probe finds the broker back
            wanted |= assigned
        # the consumer's own view: a rebalance gives kept partitions a fresh, unpaused state
        paused = consumer.paused()
        to_pause = (wanted & assigned) - paused
        to_resume = (paused - wanted) & assigned
        if to_pause:
            consumer.pause(*to_pause)
        if to_resume:
            consumer.resume(*to_resume)
        self._paused = wanted
        return bool(to_resume)

    def lag(self) -> dict[Partition, int]:
        """Records behind the partition's end, from the last fetch (no broker round trip)."""
        consumer = self._consumer
        if consumer is None:
            return {}
        result: dict[Partition, int] = {}
        for tp in consumer.assignment():
            end, position = consumer.highwater(tp), self._positions.get(tp)
            probed = self._ends.get(tp)
            if probed is not None and (end is None or probed > end):
                end = probed
            if end is not None and position is not None:
                result[(tp.topic, tp.partition)] = max(0, end - position)
        return result

    def positions(self) -> dict[Partition, int]:
        consumer = self._consumer
        if consumer is None:
            return {}
        assigned = consumer.assignment()
        return {(tp.topic, tp.partition): o for tp, o in self._positions.items() if tp in assigned}

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit to the group within `commit_timeout_s` (KafkaUnavailableError past it).

        Commits that keep failing while the broker answers otherwise mean a
        consumer whose group membership is wedged: it is replaced.
        """
        consumer = self._consumer
        if consumer is None or not offsets:
            return
        assigned = consumer.assignment()
        ours = {
            TopicPartition(t, p): o
            for (t, p), o in offsets.items()
            if TopicPartition(t, p) in assigned
        }
        if not ours:
            return
        try:
            await _bounded(consumer.commit(ours), f"{self.name}: commit", self.commit_timeout_s)
        except (KafkaUnavailableError, KafkaError):
            self._failed_commits += 1
            if self._failed_commits >= _COMMIT_FAILURES_BEFORE_REPLACING and not self.failing:
                self._replace = KafkaStalledError(
                    f"{self._failed_commits} commits in a row failed while the broker answers"
                )
            raise
        self._failed_commits = 0

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await _stop_client(consumer, self.name)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands rebalances to the runtime; a partition is read only once the runtime is ready for it.

    The fetcher may already return records of a new assignment while the
    runtime is still loading its stored offsets; the source rewinds those.
    """

    def __init__(self, source: KafkaSource, consumer: AIOKafkaConsumer, sink: EventSink) -> None:
        self.source = source
        self.consumer = consumer
        self.sink = sink

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        self.source._ready -= set(revoked)
        for tp in revoked:
            self.source._positions.pop(tp, None)
        offsets = await self.sink.revoked([(tp.topic, tp.partition) for tp in revoked])
        if offsets:
            try:
                await _bounded(
                    self.consumer.commit(
                        {TopicPartition(t, p): o for (t, p), o in offsets.items()}
                    ),
                    f"{self.source.name}: commit on revocation",
                    self.source.commit_timeout_s,
                )
            except Exception as error:  # the store has them; the next owner seeks there
                logger.warning("commit on revocation failed: %s", error)

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        stored = await self.sink.assigned([(tp.topic, tp.partition) for tp in assigned])
        for (topic, partition), offset in stored.items():
            with _translated(f"{self.source.name}: seek"):
                self.consumer.seek(TopicPartition(topic, partition), offset)
            self.source._positions[TopicPartition(topic, partition)] = offset
        self.source._ready |= set(assigned)


def _event(record: Any) -> Event:
    """A consumed record as an event; its id is topic/partition/offset."""
    return Event(
        id=f"{record.topic}/{record.partition}/{record.offset}",
        value=record.value if record.value is not None else b"",
        key=record.key.decode("utf-8", "replace") if record.key is not None else None,
        stream=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=record.timestamp / 1000 if record.timestamp is not None else None,
        headers=record.headers or (),
    )
