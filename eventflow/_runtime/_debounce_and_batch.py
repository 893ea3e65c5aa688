"""Holding events back before they run: debouncing bursts, gathering batches."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class _Burst:
    run_id: str
    pending: Any
    timer: asyncio.TimerHandle


class Debouncer:
    """Holds the latest event per debounce key until `seconds` pass without another.

    A burst of events with one key gets one run id up front: the events a later
    one supersedes are linked to it, and the last event runs under it once the
    key is quiet (`on_quiet(event, run_id)`).
    """

    def __init__(
        self,
        seconds: float,
        on_quiet: Callable[[Any, str], None],
        new_run_id: Callable[[], str],
        waiting: dict[str, int] | None = None,
    ) -> None:
        self.seconds = seconds
        self.on_quiet = on_quiet
        self.new_run_id = new_run_id
        self.waiting: dict[str, int] = {} if waiting is None else waiting
        self.waiting.setdefault("debounce", 0)
        self._bursts: dict[str, _Burst] = {}

    def offer(self, key: str, event: Any) -> tuple[Any | None, str]:
        """Hold `event`; the event it supersedes (if any) and the burst's run id."""
        loop = asyncio.get_running_loop()
        burst = self._bursts.get(key)
        if burst is None:
            timer = loop.call_later(self.seconds, self._quiet, key)
            self._bursts[key] = _Burst(self.new_run_id(), event, timer)
            self.waiting["debounce"] += 1
            return None, self._bursts[key].run_id
        superseded, burst.pending = burst.pending, event
        burst.timer.cancel()
        burst.timer = loop.call_later(self.seconds, self._quiet, key)
        return superseded, burst.run_id

    def drop(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Forget the held events `predicate` selects (stopping, partitions revoked)."""
        dropped = []
        for key, burst in list(self._bursts.items()):
            if predicate(burst.pending):
                burst.timer.cancel()
                del self._bursts[key]
                self.waiting["debounce"] -= 1
                dropped.append(burst.pending)
        return dropped

    def _quiet(self, key: str) -> None:
        burst = self._bursts.pop(key)
        self.waiting["debounce"] -= 1
        self.on_quiet(burst.pending, burst.run_id)


class Batcher:
    """Collects events into batches of `size`, or fewer once `timeout` passed since the first.

    Sealed batches wait in `ready` (in order) until the runner `take`s one.
    """

    def __init__(
        self,
        size: int,
        timeout: float,
        on_sealed: Callable[[], None],
        waiting: dict[str, int] | None = None,
    ) -> None:
        self.size = size
        self.timeout = timeout
        self.on_sealed = on_sealed
        self.waiting: dict[str, int] = {} if waiting is None else waiting
        self.waiting.setdefault("batch", 0)
        self.pending: list[Any] = []
        self.ready: deque[list[Any]] = deque()
        self._timer: asyncio.TimerHandle | None = None

    def add(self, event: Any) -> None:
        self.pending.append(event)
        self.waiting["batch"] += 1
        if len(self.pending) >= self.size:
            self.seal()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self.seal)

    def seal(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.pending:
            self.ready.append(self.pending)
            self.pending = []
            self.on_sealed()

    def take(self) -> list[Any] | None:
        if not self.ready:
            return None
        batch = self.ready.popleft()
        self.waiting["batch"] -= len(batch)
        return batch

    def drop(self, predicate: Callable[[Any], bool]) -> list[Any]:
        """Remove the events `predicate` selects from the batches not started yet."""
        dropped = [e for batch in (self.pending, *self.ready) for e in batch if predicate(e)]
        if not dropped:
            return []
        self.pending = [e for e in self.pending if not predicate(e)]
        kept = [[e for e in batch if not predicate(e)] for batch in self.ready]
        self.ready = deque(batch for batch in kept if batch)
        if not self.pending and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.waiting["batch"] -= len(dropped)
        return dropped
