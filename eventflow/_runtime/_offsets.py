"""OffsetTracker: which offset of a partition may be committed.

A partition's committed offset only advances over the contiguous prefix of
finished events, in delivery order; offsets may have gaps (compaction,
transaction markers), so "contiguous" means "every delivered event before it
has finished", not "offset + 1".
"""

from __future__ import annotations

from collections import deque


class OffsetTracker:
    """Delivered-but-unfinished offsets of one partition, and the commit position."""

    __slots__ = ("_done", "_order", "committable", "in_flight")

    def __init__(self, start: int | None = None) -> None:
        self._order: deque[int] = deque()
        self._done: set[int] = set()
        self.in_flight = 0
        self.committable: int | None = start
        """The next offset to read after a restart: every event before it has finished."""

    def delivered(self, offset: int) -> bool:
        """Track a new event; False for an offset at or behind one seen already (a redelivery)."""
        if self._order and offset <= self._order[-1]:
            return False
        if self.committable is not None and offset < self.committable and not self._order:
            return False
        self._order.append(offset)
        self.in_flight += 1
        return True

    def finished(self, offset: int) -> None:
        self._done.add(offset)
        self.in_flight -= 1
        order, done = self._order, self._done
        while order and order[0] in done:
            first = order.popleft()
            done.discard(first)
            self.committable = first + 1

    def pending(self) -> int:
        return len(self._order)
