"""OffsetTracker: the commit position only moves over the contiguous finished prefix."""

from __future__ import annotations

from eventflow._runtime._offsets import OffsetTracker


def test_commit_position_waits_for_the_oldest_unfinished_event() -> None:
    tracker = OffsetTracker()
    for offset in range(5):
        assert tracker.delivered(offset)
    tracker.finished(1)
    tracker.finished(2)
    assert tracker.committable is None  # 0 is still running
    tracker.finished(0)
    assert tracker.committable == 3
    tracker.finished(4)
    assert tracker.committable == 3
    tracker.finished(3)
    assert tracker.committable == 5
    assert tracker.in_flight == 0 and tracker.pending() == 0


def test_gaps_in_offsets_are_not_holes() -> None:
    tracker = OffsetTracker(start=10)
    for offset in (10, 13, 20):  # compaction or transaction markers skip offsets
        tracker.delivered(offset)
    tracker.finished(13)
    tracker.finished(10)
    assert tracker.committable == 14
    tracker.finished(20)
    assert tracker.committable == 21


def test_redeliveries_are_refused() -> None:
    tracker = OffsetTracker(start=5)
    assert not tracker.delivered(4)  # before the stored position
    assert tracker.delivered(5)
    assert not tracker.delivered(5)  # seen already
    tracker.finished(5)
    assert not tracker.delivered(5)
    assert tracker.delivered(6)
