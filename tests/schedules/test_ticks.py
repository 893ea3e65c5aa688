"""Tick arithmetic of interval and cron schedules (pure: no clock, no store)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from connectors.schedule import CronSchedule, IntervalSchedule
from eventflow import ConfigurationError


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_cron_next_times_every_five_minutes() -> None:
    schedule = CronSchedule("*/5 * * * *", timezone="UTC")
    assert schedule.upcoming(utc(2026, 11, 25, 12, 3, 10), 3) == [
        utc(2026, 11, 25, 12, 5),
        utc(2026, 11, 25, 12, 10),
        utc(2026, 11, 25, 12, 15),
    ]
    # strictly after: a tick time itself is not its own successor
    assert schedule.upcoming(utc(2026, 11, 25, 12, 5), 1) == [utc(2026, 11, 25, 12, 10)]
    latest = schedule.latest_tick(utc(2026, 11, 25, 12, 9, 59))
    assert schedule.tick_time(latest) == utc(2026, 11, 25, 12, 5)
    assert schedule.tick_time(schedule.latest_tick(utc(2026, 11, 25, 12, 10))) == utc(
        2026, 11, 25, 12, 10
    )


def test_cron_offsets_are_epoch_seconds_and_resume_from_a_stored_offset() -> None:
    schedule = CronSchedule("0 9 * * 1-5")  # weekdays at 09:00 UTC
    friday = utc(2026, 11, 27, 9)
    offset = schedule.latest_tick(friday)
    assert offset == int(friday.timestamp())
    # the runtime stores offset + 1: the next tick to fire is Monday's
    assert schedule.tick_time(schedule.first_tick_from(offset + 1)) == utc(2026, 11, 30, 9)
    assert schedule.first_tick_from(offset) == offset


def test_cron_in_a_timezone_fires_once_across_daylight_saving_changes() -> None:
    berlin = CronSchedule("30 2 * * *", timezone="Europe/Berlin")
    fall_back = berlin.upcoming(utc(2026, 10, 24), 3)
    # 02:30 happens twice on 25 October; it fires once, at the first (CEST, UTC+2)
    assert [t.astimezone(UTC) for t in fall_back] == [
        utc(2026, 10, 24, 0, 30),
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 26, 1, 30),
    ]
    spring = berlin.upcoming(utc(2026, 3, 28), 2)
    # 02:30 does not exist on 29 March: croniter moves it to 03:00 CEST
    assert [t.astimezone(UTC) for t in spring] == [utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1)]
    assert str(spring[0].tzinfo) == "Europe/Berlin"


def test_interval_ticks_are_multiples_of_the_interval_since_the_epoch() -> None:
    schedule = IntervalSchedule(every=timedelta(seconds=30))
    now = utc(2026, 11, 25, 12, 3, 10)
    offset = schedule.next_tick(now)
    assert schedule.tick_time(offset) == utc(2026, 11, 25, 12, 3, 30)
    assert schedule.tick_time(offset + 1) == utc(2026, 11, 25, 12, 4)
    assert offset == int(schedule.tick_time(offset).timestamp()) // 30
    assert schedule.latest_tick(now) == offset - 1
    event = schedule.event(offset)
    assert (event.stream, event.partition, event.offset) == ("schedule:every-30s", 0, offset)
    assert orjson.loads(event.value) == {"scheduled_at": "2026-11-25T12:03:30+00:00"}
    fast = IntervalSchedule(0.2)
    assert fast.tick_time(fast.next_tick(now)) == now + timedelta(milliseconds=200)


def test_catchup_latest_fires_only_the_newest_due_tick_and_all_fires_each() -> None:
    now = utc(2026, 11, 25, 12, 0, 0)
    latest = IntervalSchedule(timedelta(minutes=1), name="a")
    missed_from = latest.latest_tick(now) - 9  # ten ticks are due
    assert latest.due(missed_from, now) == [latest.latest_tick(now)]
    every = IntervalSchedule(timedelta(minutes=1), name="b", catchup="all", max_batch=4)
    assert every.due(missed_from, now) == [missed_from + i for i in range(4)]  # in batches
    assert every.due(every.next_tick(now), now) == []  # nothing is due before its time
    cron = CronSchedule("*/15 * * * *", catchup="all")
    first = cron.latest_tick(utc(2026, 11, 25, 11, 0))
    assert [cron.tick_time(o) for o in cron.due(first, now)] == [
        utc(2026, 11, 25, 11, 0),
        utc(2026, 11, 25, 11, 15),
        utc(2026, 11, 25, 11, 30),
        utc(2026, 11, 25, 11, 45),
        utc(2026, 11, 25, 12, 0),
    ]


def test_invalid_schedules_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="invalid cron expression"):
        CronSchedule("every five minutes")
    with pytest.raises(ConfigurationError, match="unknown timezone"):
        CronSchedule("* * * * *", timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="positive interval"):
        IntervalSchedule(timedelta(0))
    with pytest.raises(ConfigurationError, match="catchup"):
        IntervalSchedule(1, catchup="some")  # type: ignore[arg-type]
