"""The admission gate: when an event's run may start (concurrency, rate limits, priority).

At most `concurrency` runs per concurrency key, and no faster than a token
bucket per rate key. Waiting events keep their place in the runner's
in-flight count (so the source pauses rather than buffering without bound)
and start highest `priority` first, then in arrival order. Pure bookkeeping
on the event loop: no I/O.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from ._control_options import Controls, Rate

WaitReason = Literal["concurrency", "rate_limit"]


class TokenBucket:
    """Holds up to `rate.count` tokens, refilled at `rate.count / rate.per` a second."""

    __slots__ = ("capacity", "refill", "stamp", "tokens")

    def __init__(self, rate: Rate, now: float) -> None:
        self.capacity = max(1.0, rate.count)  # "0.5/s" still admits one run every 2 s
        self.refill = rate.count / rate.per
        self.tokens = self.capacity
        self.stamp = now

    def _update(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.refill)
            self.stamp = now

    def take(self, now: float) -> bool:
        self._update(now)
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self, now: float) -> float:
        """Seconds until a token is there."""
        self._update(now)
        return max(0.0, (1 - self.tokens) / self.refill)

    def full(self, now: float) -> bool:
        self._update(now)
        return self.tokens >= self.capacity


class AdmissionAbandoned(Exception):
    """The event stopped waiting: the worker is stopping or its partition was revoked."""


_GLOBAL = "\x00all"
"""The concurrency or rate key of events when the control has no key function."""


@dataclass(eq=False, slots=True)
class Ticket:
    """One event asking to start; `waited_for` says what held it back, if anything."""

    concurrency_key: str | None
    rate_key: str | None
    priority: float
    owner: Any = None
    seq: int = 0
    future: asyncio.Future[None] | None = None
    where: WaitReason | None = None
    waited_for: list[WaitReason] = field(default_factory=list)
    granted: bool = False
    dead: bool = False

    def order(self) -> tuple[float, int]:
        return (-self.priority, self.seq)


class Admission:
    """When events may start, under a concurrency limit and a rate limit (see the module)."""

    def __init__(
        self,
        controls: Controls,
        clock: Callable[[], float] = time.monotonic,
        waiting: dict[str, int] | None = None,
    ) -> None:
        self.concurrency = controls.concurrency
        self.keyed_concurrency = controls.concurrency_key is not None
        self.rate = controls.rate_limit
        self.keyed_rate = controls.rate_limit_key is not None
        self.clock = clock
        self.waiting: dict[str, int] = {} if waiting is None else waiting
        """Tickets waiting now, by reason (the runner's `RunnerStats.waiting`)."""
        self.waiting.setdefault("concurrency", 0)
        self.waiting.setdefault("rate_limit", 0)
        self.running: dict[str, int] = {}
        self._seq = itertools.count()
        self._ready: list[tuple[tuple[float, int], Ticket]] = []
        self._blocked: dict[str, list[tuple[tuple[float, int], Ticket]]] = {}
        self._throttled: dict[str, list[tuple[tuple[float, int], Ticket]]] = {}
        self._buckets: dict[str, TokenBucket] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def ticket(
        self,
        concurrency_key: str | None,
        rate_key: str | None,
        priority: float = 0.0,
        owner: Any = None,
    ) -> Ticket:
        """A ticket for an event with these keys (None: not limited by that control)."""
        if self.concurrency is None:
            concurrency_key = None
        elif not self.keyed_concurrency:
            concurrency_key = _GLOBAL
        if self.rate is None:
            rate_key = None
        elif not self.keyed_rate:
            rate_key = _GLOBAL
        return Ticket(concurrency_key, rate_key, priority, owner, next(self._seq))

    def offer(self, ticket: Ticket) -> bool:
        """Ask to start; True if it may start now, else await `wait(ticket)`."""
        ticket.future = asyncio.get_running_loop().create_future()
        heapq.heappush(self._ready, (ticket.order(), ticket))
        self._pump()
        return ticket.granted

    async def wait(self, ticket: Ticket) -> None:
        """Until the ticket may start; raises AdmissionAbandoned if it never will."""
        assert ticket.future is not None
        try:
            await ticket.future
        except asyncio.CancelledError:
            if ticket.granted:
                self.release(ticket)
            else:
                self._drop(ticket)
            raise

    def release(self, ticket: Ticket) -> None:
        """The ticket's run ended: its concurrency slot goes to the next waiting event."""
        if not ticket.granted:
            self._drop(ticket)
            return
        ticket.granted = False
        key = ticket.concurrency_key
        if key is None:
            return
        left = self.running[key] - 1
        if left:
            self.running[key] = left
        else:
            del self.running[key]
        blocked = self._blocked.get(key)
        while blocked:
            _order, waiter = heapq.heappop(blocked)
            if not waiter.dead:
                self._leave(waiter)
                heapq.heappush(self._ready, (waiter.order(), waiter))
                break
        if blocked is not None and not blocked:
            del self._blocked[key]
        self._pump()

    def abandon(self, predicate: Callable[[Ticket], bool]) -> int:
        """Stop the waiting tickets `predicate` selects (their events run again later)."""
        count = 0
        for heap in (self._ready, *self._blocked.values(), *self._throttled.values()):
            for _order, ticket in heap:
                if not ticket.dead and not ticket.granted and predicate(ticket):
                    self._drop(ticket)
                    assert ticket.future is not None
                    if not ticket.future.done():
                        ticket.future.set_exception(AdmissionAbandoned())
                    count += 1
        return count

    # -- internals ---------------------------------------------------------------------

    def _drop(self, ticket: Ticket) -> None:
        if not ticket.dead:
            ticket.dead = True
            self._leave(ticket)

    def _leave(self, ticket: Ticket) -> None:
        if ticket.where is not None:
            self.waiting[ticket.where] -= 1
            ticket.where = None

    def _park(self, ticket: Ticket, reason: WaitReason, heap: list[Any]) -> None:
        heapq.heappush(heap, (ticket.order(), ticket))
        ticket.where = reason
        self.waiting[reason] += 1
        if reason not in ticket.waited_for:
            ticket.waited_for.append(reason)

    def _pump(self) -> None:
        while self._ready:
            _order, ticket = heapq.heappop(self._ready)
            if ticket.dead:
                continue
            key = ticket.concurrency_key
            if key is not None and self._full(key):
                self._park(ticket, "concurrency", self._blocked.setdefault(key, []))
                continue
            rate_key = ticket.rate_key
            if rate_key is not None:
                throttled = self._throttled.get(rate_key)
                if throttled or not self._bucket(rate_key).take(self.clock()):
                    # behind the events already waiting for this bucket, by priority
                    self._park(ticket, "rate_limit", self._throttled.setdefault(rate_key, []))
                    self._schedule(rate_key)
                    continue
            self._grant(ticket)

    def _full(self, key: str) -> bool:
        return self.concurrency is not None and self.running.get(key, 0) >= self.concurrency

    def _grant(self, ticket: Ticket) -> None:
        key = ticket.concurrency_key
        if key is not None:
            self.running[key] = self.running.get(key, 0) + 1
        ticket.granted = True
        assert ticket.future is not None
        if not ticket.future.done():
            ticket.future.set_result(None)

    def _bucket(self, key: str) -> TokenBucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            assert self.rate is not None
            if len(self._buckets) >= 10_000:  # forget idle keys: a full bucket is a new one
                now = self.clock()
                for idle in [k for k, b in self._buckets.items() if b.full(now)]:
                    if idle not in self._throttled:
                        del self._buckets[idle]
            bucket = self._buckets[key] = TokenBucket(self.rate, self.clock())
        return bucket

    def _schedule(self, key: str) -> None:
        if key in self._timers:
            return
        delay = self._bucket(key).wait(self.clock())
        loop = asyncio.get_running_loop()
        self._timers[key] = loop.call_later(delay, self._on_token, key)

    def _on_token(self, key: str) -> None:
        """A token may be there: start the best throttled events while there are tokens."""
        del self._timers[key]
        throttled = self._throttled.get(key, [])
        bucket = self._bucket(key)
        while throttled:
            _order, ticket = throttled[0]
            if ticket.dead:
                heapq.heappop(throttled)
                continue
            group = ticket.concurrency_key
            if group is not None and self._full(group):
                heapq.heappop(throttled)
                self._leave(ticket)
                self._park(ticket, "concurrency", self._blocked.setdefault(group, []))
                continue
            if not bucket.take(self.clock()):
                break
            heapq.heappop(throttled)
            self._leave(ticket)
            self._grant(ticket)
        if throttled:
            self._schedule(key)
        else:
            self._throttled.pop(key, None)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
