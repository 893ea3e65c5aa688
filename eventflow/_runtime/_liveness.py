"""Liveness: what each subscription is doing, said quietly to people and plainly to probes.

An `Outage` turns a stream of failures (a broker that refuses connections ten
times a second) into three kinds of log line: one WARNING when it starts, a
summary every 30 s while it lasts, one INFO when it ends. `SubscriptionHealth`
derives a subscription's state (running, reconnecting, stalled, stopped) from
its source and its counters, once a second. `RepeatFilter` does for a library's
own log records (aiokafka's) what `Outage` does for ours.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from .._states import SourceState

logger = logging.getLogger("eventflow.runtime")


SUMMARY_EVERY = 30.0
"""Seconds between the log summaries of an outage that goes on."""


class Outage:
    """The failures of one thing (a source's connection, the store), logged without flooding."""

    def __init__(self, what: str, *, summary_every: float = SUMMARY_EVERY) -> None:
        self.what = what
        self.summary_every = summary_every
        self.since: float | None = None
        """When the failures began (time.time()); None while it works."""
        self.failures = 0
        self.last_error: str | None = None
        self._last_summary = 0.0

    @property
    def active(self) -> bool:
        return self.since is not None

    def failed(self, error: str, now: float | None = None) -> None:
        """One more failure; the first one of an outage is logged."""
        now = time.time() if now is None else now
        self.last_error = error
        if self.since is None:
            self.since, self.failures, self._last_summary = now, 1, now
            logger.warning(
                "%s: %s; retrying (a summary every %.0fs)", self.what, error, self.summary_every
            )
            return
        self.failures += 1

    def recovered(self, now: float | None = None) -> None:
        """It works again: one INFO line if it had failed more than once.

        (A lone failure, the next attempt fine, needs no second line.)
        """
        if self.since is None:
            return
        now = time.time() if now is None else now
        if self.failures > 1:
            logger.info(
                "%s: back after %.0fs (%d failed attempts)",
                self.what,
                now - self.since,
                self.failures,
            )
        self.since, self.failures, self.last_error = None, 0, None

    def clear(self) -> None:
        """Forget the outage without a word: what failed is no longer tried (not ours now)."""
        self.since, self.failures, self.last_error = None, 0, None

    def tick(self, now: float | None = None) -> None:
        """Call often: while the outage lasts, a summary line every `summary_every` seconds."""
        if self.since is None:
            return
        now = time.time() if now is None else now
        if now - self._last_summary >= self.summary_every:
            self._last_summary = now
            logger.warning(
                "%s: still failing after %.0fs%s; last error: %s",
                self.what,
                now - self.since,
                f" ({self.failures} failed attempts)" if self.failures else "",
                self.last_error,
            )

    def watch(self, failing: bool, error: str | None, now: float | None = None) -> None:
        """For a thing that logs its own failure and recovery (the run store's writer):
        only the summaries while it fails. Call often."""
        if not failing:
            self.since, self.failures = None, 0
            return
        now = time.time() if now is None else now
        if self.since is None:
            self.since, self._last_summary = now, now
        self.last_error = error
        self.tick(now)


@dataclass(frozen=True, slots=True)
class HealthVerdict:
    """One subscription's answer to a probe."""

    subscription: str
    state: SourceState
    alive: bool
    """False when a restart is what it needs (a Kubernetes liveness probe fails)."""
    ready: bool
    reason: str


class SubscriptionHealth:
    """A subscription's visible state, updated once a second from its source and counters.

    - `stopped`: the worker is shutting down, or the source ended.
    - `reconnecting`: the source's task is restarting after a failure, or the
      source reports failures it has not yet recovered from.
    - `stalled`: events wait (lag > 0) but none was consumed and no run
      finished for `stall_after` seconds.
    - `running`: otherwise.

    `stalled_seconds` is how long nothing was consumed while events waited;
    past `unhealthy_after` the subscription is not alive (a liveness probe fails).
    """

    def __init__(self, name: str, *, stall_after: float, unhealthy_after: float) -> None:
        self.name = name
        self.stall_after = stall_after
        self.unhealthy_after = unhealthy_after
        self.state: SourceState = "running"
        self.since = time.time()
        self.source_down_since: float | None = None
        """Set while the source's task is not running (between a failure and its restart)."""
        self.stopped = False
        self.lag = 0
        self._mark: tuple[int, int] = (-1, -1)
        self.received_moved = False
        """Whether the last `update` saw events received since the one before."""
        self._progress_at = time.monotonic()

    # -- what the supervisor says ------------------------------------------------------

    def source_failed(self) -> None:
        if self.source_down_since is None:
            self.source_down_since = time.time()

    def source_started(self) -> None:
        self.source_down_since = None

    def shut_down(self) -> None:
        """The worker stops: `stopped` from now on."""
        self.stopped = True
        if self.state != "stopped":
            self.state, self.since = "stopped", time.time()

    # -- once a second -----------------------------------------------------------------

    def update(
        self,
        *,
        received: int,
        finished: int,
        lag: int | None,
        source_failing: bool,
        stopping: bool,
        store_up: bool = True,
        now: float | None = None,
    ) -> SourceState:
        """The state now, from the counters and the source; logs when it changes.

        `lag` is None when the source does not know it now (a Kafka consumer
        being replaced); the last known lag stands in for it. While the store
        is down consumption pauses on purpose: that is not a stall (the store's
        own state says what is wrong, and a restart would not help).
        """
        now = time.time() if now is None else now
        monotonic = time.monotonic()
        if lag is not None:
            self.lag = lag
        mark = (received, finished)
        self.received_moved = received != self._mark[0] and self._mark[0] >= 0
        if mark != self._mark or self.lag == 0 or not store_up:
            self._mark, self._progress_at = mark, monotonic
        if stopping or self.stopped:
            state: SourceState = "stopped"
        elif self.source_down_since is not None or source_failing:
            state = "reconnecting"
        elif self.stalled_seconds() >= self.stall_after:
            state = "stalled"
        else:
            state = "running"
        if state != self.state:
            self._changed(state, now)
        return state

    def stalled_seconds(self) -> float:
        """Seconds since the last event consumed or run finished, while events wait."""
        if self.lag <= 0:
            return 0.0
        return time.monotonic() - self._progress_at

    def verdict(self, now: float | None = None) -> HealthVerdict:
        now = time.time() if now is None else now
        stalled = self.stalled_seconds()
        alive, reason = True, str(self.state)
        if stalled >= self.unhealthy_after:
            alive = False
            reason = f"nothing consumed for {stalled:.0f}s while {self.lag} events wait"
        elif (
            self.source_down_since is not None
            and now - self.source_down_since >= self.unhealthy_after
        ):
            alive = False
            reason = f"source down for {now - self.source_down_since:.0f}s"
        return HealthVerdict(self.name, self.state, alive, self.state == "running", reason)

    def _down_for(self, now: float) -> float:
        return 0.0 if self.source_down_since is None else now - self.source_down_since

    def _changed(self, state: SourceState, now: float) -> None:
        previous, self.state, self.since = self.state, state, now
        if state == "stalled":
            logger.warning(
                "%s: stalled: nothing consumed for %.0fs while %d events wait",
                self.name,
                self.stalled_seconds(),
                self.lag,
            )
        elif previous == "stalled" and state == "running":
            logger.info("%s: consuming again", self.name)


class WorkerHealth:
    """The worker's last health check, published once a second for the probe endpoint.

    The endpoint runs on its own thread and only reads `read()`; a check older
    than `STALE_AFTER` seconds means the event loop itself is stuck: not alive.
    """

    STALE_AFTER = 30.0

    def __init__(self) -> None:
        self._verdicts: tuple[HealthVerdict, ...] = ()
        self._store_up = True
        self._checked_at: float | None = None

    def publish(self, verdicts: list[HealthVerdict], *, store_up: bool, now: float) -> None:
        self._verdicts, self._store_up, self._checked_at = tuple(verdicts), store_up, now

    def read(self) -> dict[str, Any]:
        """`{"alive": bool, "ready": bool, "store_up": bool, "subscriptions": [...]}`.

        Alive unless a subscription is stalled or its source down past
        `EVENTFLOW_HEALTH_STALL_SECONDS`, or the loop stopped checking. A store
        outage makes the worker not ready but keeps it alive: a restart would not
        bring the database back, and the worker resumes by itself.
        """
        checked_at = self._checked_at
        verdicts = self._verdicts
        stale = checked_at is not None and time.time() - checked_at > self.STALE_AFTER
        alive = not stale and all(v.alive for v in verdicts)
        ready = (
            checked_at is not None and alive and self._store_up and all(v.ready for v in verdicts)
        )
        return {
            "alive": alive,
            "ready": ready,
            "store_up": self._store_up,
            "checked_at": checked_at,
            "reason": "the event loop stopped checking" if stale else None,
            "subscriptions": [
                {
                    "subscription": v.subscription,
                    "state": v.state,
                    "alive": v.alive,
                    "reason": v.reason,
                }
                for v in verdicts
            ],
        }


class RepeatFilter(logging.Filter):
    """Lets the first record of each kind through, then at most one per `window` seconds.

    A record's kind is its logger, level and message template (not its
    arguments, so "Unable connect to node 1: ..." is one kind however the
    error reads). A let-through record after suppressed ones says how many.
    """

    def __init__(self, window: float = 60.0) -> None:
        super().__init__()
        self.window = window
        self._last: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.window:
            self._last[key] = (last[0], last[1] + 1)
            return False
        suppressed = last[1] if last is not None else 0
        self._last[key] = (now, 0)
        if len(self._last) > 1000:  # kinds are few; never let the table grow without bound
            self._last = {key: self._last[key]}
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} like it in the last {self.window:.0f}s)"
        return True


def quiet_library_logs(prefix: str, window: float = 60.0) -> RepeatFilter:
    """Put one `RepeatFilter` on every logger named `prefix` or `prefix.*` that exists now.

    Call after importing the library: its modules create their loggers at
    import. (A filter on a logger sees only the records logged to that logger,
    not its children's, hence one on each.)
    """
    repeat = RepeatFilter(window)
    names = [
        n for n in logging.root.manager.loggerDict if n == prefix or n.startswith(prefix + ".")
    ]
    for name in [prefix, *names]:
        target = logging.getLogger(name)
        if not any(isinstance(f, RepeatFilter) for f in target.filters):
            target.addFilter(repeat)
    return repeat
