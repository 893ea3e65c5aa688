"""Schedules: sources that fire on a cadence, every tick one tracked flow run.

A schedule is a partitioned source with one partition: stream
`schedule:<name>`, partition 0, and the tick's index as its offset (interval:
the number of intervals since the Unix epoch; cron: the tick's epoch second).
The runtime stores the next offset with the runs, so a restarted worker
resumes after the last tick that ran, and a tick whose run already ended is
never run again. Only the worker holding the schedule's lease in the run store
fires it, so `eventflow run --workers N` fires each tick once.

The event is `{"scheduled_at": "<ISO 8601>"}`: a flow may take a
`scheduled_at: datetime` parameter, or ignore it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import abstractmethod
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from eventflow import ConfigurationError
from eventflow.runtime import Event, EventSink, Source, missing_extra

try:
    from croniter import croniter
except ImportError:  # the `schedules` extra: CronSchedule says so when it is built
    croniter = None  # type: ignore[assignment,misc]

logger = logging.getLogger("eventflow.schedule")

CatchUp = Literal["latest", "all"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_IDLE_POLL = 0.25
"""Longest sleep between checks of the stop flag, the clock and the lease."""


class Schedule(Source):
    """A source of ticks; see `IntervalSchedule` and `CronSchedule`.

    `catchup` says what happens to ticks that fell due while no worker fired
    them (all workers down, or runs of this schedule still in flight at the
    bound): `"latest"` runs only the latest of them, `"all"` runs every one,
    oldest first. A first start ever fires nothing from the past.
    `lease_ttl` is how long a worker's hold on the schedule lasts without
    renewal (it renews at a third of it): after a worker dies, another one
    takes over within that time. `deadline` is how long after its scheduled
    time each tick's run should have completed: a tick not completed by then
    makes the schedule's dataset (`schedule:<name>`) late, and the flows
    downstream of it affected (see the guide "Lineage and late data").
    """

    def __init__(
        self,
        name: str,
        *,
        catchup: CatchUp,
        lease_ttl: float,
        max_batch: int,
        deadline: timedelta | float | None = None,
    ) -> None:
        if catchup not in ("latest", "all"):
            raise ConfigurationError(f"catchup must be 'latest' or 'all', not {catchup!r}")
        if lease_ttl <= 0:
            raise ConfigurationError("lease_ttl must be > 0")
        if max_batch < 1:
            raise ConfigurationError("max_batch must be >= 1")
        self.deadline = _positive_seconds(deadline, "deadline")
        self.stream = f"schedule:{name}"
        self.name = self.stream
        self.group_id = self.stream
        self.catchup: CatchUp = catchup
        self.lease_ttl = lease_ttl
        self.max_batch = max_batch
        self._sink: EventSink | None = None

    # -- tick arithmetic (offsets are tick indexes) -----------------------------------

    @abstractmethod
    def tick_time(self, offset: int) -> datetime:
        """When the tick with this offset is due."""

    @abstractmethod
    def next_tick(self, after: datetime) -> int:
        """The offset of the first tick strictly after `after`."""

    @abstractmethod
    def latest_tick(self, at: datetime) -> int:
        """The offset of the last tick at or before `at`."""

    def first_tick_from(self, offset: int) -> int:
        """The first tick whose offset is `offset` or more (a stored offset may fall between)."""
        return self.next_tick(self.tick_time(offset) - _MICROSECOND)

    def freshness_due(self, last_scheduled: float | None, since: float) -> float | None:
        """When the next tick's run is due to have completed: the tick after the last one
        completed (`last_scheduled`; none yet: the first after `since`) plus the deadline."""
        if self.deadline is None:
            return None
        base = datetime.fromtimestamp(since if last_scheduled is None else last_scheduled, UTC)
        return self.tick_time(self.next_tick(base)).timestamp() + self.deadline

    def upcoming(self, after: datetime, count: int) -> list[datetime]:
        """The times of the next `count` ticks strictly after `after`."""
        times = []
        offset = self.next_tick(after)
        for _ in range(count):
            moment = self.tick_time(offset)
            times.append(moment)
            offset = self.next_tick(moment)
        return times

    # -- the source --------------------------------------------------------------------

    def event(self, offset: int) -> Event:
        """The event of one tick."""
        moment = self.tick_time(offset)
        return Event(
            id=f"{self.stream}/0/{offset}",
            value=orjson.dumps({"scheduled_at": moment.isoformat()}),
            stream=self.stream,
            partition=0,
            offset=offset,
            timestamp=moment.timestamp(),
        )

    def due(self, next_offset: int, now: datetime) -> list[int]:
        """The ticks to fire now, from `next_offset` on, by the catch-up policy."""
        if self.tick_time(next_offset) > now:
            return []
        if self.catchup == "latest":
            return [max(next_offset, self.latest_tick(now))]
        offsets: list[int] = []
        offset = next_offset
        while len(offsets) < self.max_batch and self.tick_time(offset) <= now:
            offsets.append(offset)
            offset = self.next_tick(self.tick_time(offset))
        return offsets

    async def run(self, sink: EventSink) -> None:
        self._sink = sink
        partition = (self.stream, 0)
        lease_name = self.group_id or self.stream
        held = False
        holding = False  # the runtime has the partition assigned to us
        next_offset = 0
        renew_at = 0.0
        try:
            while not sink.stopping:
                if time.monotonic() >= renew_at:
                    asked = time.monotonic()  # the lease runs from (at the latest) now
                    held = await sink.durable.lease(lease_name, self.lease_ttl)
                    # a renewal slower than the lease itself holds nothing any more
                    held = held and time.monotonic() < asked + self.lease_ttl
                    renew_at = asked + self.lease_ttl / 3
                    if not held and holding:
                        logger.warning("%s: lost the lease; another worker fires it", self.name)
                        await sink.revoked([partition])
                        holding = False
                if not held:
                    await _sleep_until(sink, renew_at)
                    continue
                if not holding:
                    stored = await sink.assigned([partition])
                    holding = True
                    start = stored.get(partition)
                    now = datetime.now(UTC)
                    next_offset = (
                        self.next_tick(now) if start is None else self.first_tick_from(start)
                    )
                    logger.info(
                        "%s: firing from %s", self.name, self.tick_time(next_offset).isoformat()
                    )
                if partition in sink.paused([partition]):
                    await _sleep_until(sink, min(renew_at, time.monotonic() + 0.05))
                    continue
                offsets = self.due(next_offset, datetime.now(UTC))
                if offsets:
                    await sink.deliver([self.event(o) for o in offsets])
                    next_offset = self.next_tick(self.tick_time(offsets[-1]))
                    continue
                until_tick = (self.tick_time(next_offset) - datetime.now(UTC)).total_seconds()
                await _sleep_until(sink, min(renew_at, time.monotonic() + until_tick))
        except BaseException:
            if holding and not sink.stopping:
                await sink.revoked([partition])
            raise

    async def close(self) -> None:
        """Give the lease back (after the final commit) so another worker fires at once."""
        sink, self._sink = self._sink, None
        if sink is not None:
            await sink.durable.release_lease(self.group_id or self.stream)


class IntervalSchedule(Schedule):
    """Fires every `every`, at whole multiples of it since the Unix epoch (UTC).

    `IntervalSchedule(every=timedelta(seconds=30))` fires at :00 and :30 of
    every minute, on whichever worker runs it. `name` identifies the schedule
    in the store (offsets, lease, runs' event source): give one when two
    subscriptions use the same interval.
    """

    def __init__(
        self,
        every: timedelta | float,
        *,
        name: str | None = None,
        catchup: CatchUp = "latest",
        lease_ttl: float = 10.0,
        max_batch: int = 500,
        deadline: timedelta | float | None = None,
    ) -> None:
        interval = every if isinstance(every, timedelta) else timedelta(seconds=every)
        self.every_us = interval // _MICROSECOND
        if self.every_us < 1:
            raise ConfigurationError("an interval schedule needs a positive interval")
        self.every = interval
        super().__init__(
            name or f"every-{interval.total_seconds():g}s",
            catchup=catchup,
            lease_ttl=lease_ttl,
            max_batch=max_batch,
            deadline=deadline,
        )

    def tick_time(self, offset: int) -> datetime:
        return _EPOCH + offset * self.every_us * _MICROSECOND

    def next_tick(self, after: datetime) -> int:
        return self.latest_tick(after) + 1

    def latest_tick(self, at: datetime) -> int:
        return ((at - _EPOCH) // _MICROSECOND) // self.every_us


class CronSchedule(Schedule):
    """Fires at the times a cron expression names, in `timezone` (croniter's syntax).

    Five fields (minute hour day month weekday), or six with seconds last.
    Ticks are whole seconds; the offset is the tick's epoch second. When
    daylight saving time ends, the repeated hour's times fire once (the first
    time round); when it starts, croniter moves the skipped times to the
    first valid time.
    """

    def __init__(
        self,
        expression: str,
        *,
        timezone: str = "UTC",
        name: str | None = None,
        catchup: CatchUp = "latest",
        lease_ttl: float = 10.0,
        max_batch: int = 500,
        deadline: timedelta | float | None = None,
    ) -> None:
        if croniter is None:
            raise missing_extra("croniter", "schedules", "CronSchedule")
        if not croniter.is_valid(expression):
            raise ConfigurationError(f"invalid cron expression: {expression!r}")
        try:
            self.timezone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigurationError(f"unknown timezone: {timezone!r}") from None
        self.expression = expression
        super().__init__(
            name or f"cron:{expression}@{timezone}",
            catchup=catchup,
            lease_ttl=lease_ttl,
            max_batch=max_batch,
            deadline=deadline,
        )

    def tick_time(self, offset: int) -> datetime:
        return datetime.fromtimestamp(offset, self.timezone)

    def next_tick(self, after: datetime) -> int:
        start = datetime.fromtimestamp(math.floor(after.timestamp()), self.timezone)
        ticks = croniter(self.expression, start)
        while True:
            moment: datetime = ticks.get_next(datetime)
            if not _repeated_wall_time(moment):
                return int(moment.timestamp())

    def latest_tick(self, at: datetime) -> int:
        start = datetime.fromtimestamp(math.floor(at.timestamp()) + 1, self.timezone)
        ticks = croniter(self.expression, start)
        while True:
            moment: datetime = ticks.get_prev(datetime)
            if not _repeated_wall_time(moment):
                return int(moment.timestamp())


def _positive_seconds(value: timedelta | float | None, option: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds > 0:
        raise ConfigurationError(f"{option} must be a positive period, not {value!r}")
    return seconds


def _repeated_wall_time(moment: datetime) -> bool:
    """A local time the clock shows a second time (DST ends): cron fires it once, not twice."""
    return moment.fold == 1 and moment.replace(fold=0).utcoffset() != moment.utcoffset()


async def _sleep_until(sink: EventSink, deadline: float) -> None:
    """Sleep until the monotonic `deadline`, waking at least every `_IDLE_POLL` to see a stop."""
    delay = deadline - time.monotonic()
    if delay > 0 and not sink.stopping:
        await asyncio.sleep(min(delay, _IDLE_POLL))
