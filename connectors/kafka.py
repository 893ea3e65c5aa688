"""Kafka: a consumer-group source and a producer sink (aiokafka).

The source only translates: records become `Event`s, the runtime's pause set
becomes `pause()`/`resume()` (polling never stops, so the group does not
rebalance while the worker is busy), rebalances become `assigned`/`revoked`
calls, and offsets the runtime made durable are committed to Kafka so lag
tools see them. Offsets live first in the run store; on assignment the
consumer seeks to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import IllegalStateError, KafkaError
from aiokafka.helpers import create_ssl_context

from eventflow import ConfigurationError, EventflowError
from eventflow.runtime import (
    TRACING,
    Event,
    EventSink,
    Partition,
    Sink,
    Source,
    quiet_library_logs,
)

logger = logging.getLogger("eventflow.kafka")

# aiokafka logs every failed connection attempt (thousands in a one-minute outage);
# the source's outage log says what matters: lost, still lost every 30 s, back
quiet_library_logs("aiokafka")

CALL_TIMEOUT = 15.0
"""Seconds any single call to the broker may take before it counts as failed."""

_PROBE_TIMEOUT = 5.0
"""Seconds the broker gets to answer a probe (it answers in milliseconds when it is there)."""

_COMMIT_FAILURES_BEFORE_REPLACING = 3

T = TypeVar("T")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """How to reach the cluster, shared by sources and sinks (passed through to aiokafka)."""

    bootstrap_servers: str | Sequence[str] = "localhost:9092"
    client_id: str = "eventflow"
    security_protocol: SecurityProtocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    sasl_mechanism: SaslMechanism | None = None
    sasl_plain_username: str | None = None
    sasl_plain_password: str | None = None
    request_timeout_ms: int = 40_000

    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        context = self.ssl_context
        if context is None and (self.ssl_cafile or self.ssl_certfile):
            context = create_ssl_context(
                cafile=self.ssl_cafile, certfile=self.ssl_certfile, keyfile=self.ssl_keyfile
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = context or create_ssl_context()
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ConfigurationError(f"{self.security_protocol} needs a sasl_mechanism")
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_plain_username
            options["sasl_plain_password"] = self.sasl_plain_password
        return options

    def __repr__(self) -> str:  # never print the password
        return f"KafkaConnection({self.bootstrap_servers!r}, {self.security_protocol})"


def _connection(
    connection: KafkaConnection | None, bootstrap_servers: str | Sequence[str] | None
) -> KafkaConnection:
    if connection is not None:
        if bootstrap_servers is not None:
            raise ConfigurationError("give bootstrap_servers or connection, not both")
        return connection
    return KafkaConnection(bootstrap_servers=bootstrap_servers or "localhost:9092")


class KafkaBrokerError(EventflowError):
    """Kafka (through aiokafka) reported an error; the message names aiokafka's.

    aiokafka's errors do not leave this module: they become this class or a
    narrower one, so the runtime logs one line for them, not a traceback.
    """


class KafkaStalledError(KafkaBrokerError):
    """The consumer stopped receiving records it should receive; it is replaced."""


class KafkaUnavailableError(KafkaBrokerError):
    """The broker did not answer in time (or refused); the source retries quietly."""


@contextlib.contextmanager
def _translated(what: str) -> Iterator[None]:
    """aiokafka's errors raised in the block, as KafkaBrokerError (`what` failed)."""
    try:
        yield
    except KafkaError as error:
        raise KafkaBrokerError(f"{what}: {type(error).__name__}: {error}") from error


async def _bounded(call: Awaitable[T], what: str, timeout: float = CALL_TIMEOUT) -> T:
    """`call`, or KafkaUnavailableError after `timeout` seconds or on any broker error."""
    try:
        return await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise KafkaUnavailableError(f"{what}: no answer from the broker in {timeout:g}s") from None
    except KafkaError as error:
        raise KafkaUnavailableError(f"{what}: {type(error).__name__}: {error}") from error


async def _stop_client(client: AIOKafkaConsumer | AIOKafkaProducer, what: str) -> None:
    """Stop a consumer or producer within CALL_TIMEOUT (leaving a group needs the broker).

    A client that cannot stop cleanly is abandoned with a warning: the caller
    is replacing it, and must not fail for it.
    """
    try:
        await asyncio.wait_for(client.stop(), CALL_TIMEOUT)
    except TimeoutError:
        logger.warning("%s: not stopped cleanly in %gs (broker unreachable)", what, CALL_TIMEOUT)
    except KafkaError as error:
        logger.warning("%s: not stopped cleanly: %s", what, error)
    except asyncio.CancelledError:
        if _cancelled():
            raise
        # aiokafka re-raises the CancelledError its coordination task ended with
        logger.warning("%s: not stopped cleanly: its group coordination was cancelled", what)


def _cancelled() -> bool:
    """True if the running task is being cancelled (by its owner, not by a library)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


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
        message's `traceparent` header (eventflow/_tracing.py).
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
        since = self.outage.since
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
