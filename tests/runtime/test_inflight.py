"""InFlight: the runner's books of events taken and not finished with (pure bookkeeping)."""

from __future__ import annotations

from eventflow._runtime._inflight import InFlight
from eventflow._runtime._source import Event
from eventflow._store._runstore import FinishedRun


def _event(offset: int, key: str | None = "k", partition: int = 0) -> Event:
    return Event(
        id=f"orders/{partition}/{offset}",
        value=b"{}",
        key=key,
        stream="orders",
        partition=partition,
        offset=offset,
    )


def _books(start: int | None = None, done: dict[int, FinishedRun] | None = None) -> InFlight:
    books = InFlight("orders->process", key_ordering=True)
    books.assign(("orders", 0), start, done or {})
    return books


def test_one_keys_events_wait_in_order_and_start_one_after_the_other() -> None:
    books = _books()
    first, second, third = (books.accept(_event(o)) for o in (0, 1, 2))
    assert first is not None and second is not None and third is not None
    assert [books.enter(d) for d in (first, second, third)] == [True, False, False]
    assert books.count == 3

    assert books.finish(first, True) == (second, ())
    assert books.finish(second, True) == (third, ())
    assert books.finish(third, True) == (None, ())
    assert books.count == 0
    assert books.partitions[("orders", 0)].tracker.committable == 3


def test_an_unfinished_event_drops_its_keys_queue_and_holds_the_offset_back() -> None:
    books = _books()
    first, second = books.accept(_event(0)), books.accept(_event(1))
    other = books.accept(_event(2, key="other"))
    assert first is not None and second is not None and other is not None
    for delivery in (first, second, other):
        books.enter(delivery)

    # its partition stopped (or its run was abandoned): the queued event is read again later
    assert books.finish(first, False) == (None, [second])
    assert books.finish(other, True) == (None, ())
    assert books.count == 0
    state = books.partitions[("orders", 0)]
    assert state.tracker.in_flight == 0
    assert state.tracker.committable is None  # offset 0 never finished


def test_redeliveries_are_refused_and_ended_runs_come_back_as_previous() -> None:
    ended = FinishedRun("run-7", "COMPLETED", None)
    books = _books(start=5, done={7: ended, 3: FinishedRun("run-3", "COMPLETED", None)})
    assert books.accept(_event(4)) is None  # before the stored offset
    five = books.accept(_event(5))
    assert five is not None and five.previous is None
    assert books.accept(_event(5)) is None  # seen already
    seven = books.accept(_event(7))
    assert seven is not None and seven.previous is ended
    assert 3 not in books.partitions[("orders", 0)].done  # behind where reading started
    assert books.count == 2


def test_events_of_partitions_not_ours_are_not_taken() -> None:
    books = _books()
    assert books.accept(_event(0, partition=1)) is None
    books.stop_partition(_event(0))
    assert books.accept(_event(0)) is None
    assert books.count == 0


def test_stopping_drops_what_waits_behind_a_finishing_run() -> None:
    books = _books()
    first, second = books.accept(_event(0)), books.accept(_event(1))
    assert first is not None and second is not None
    books.enter(first)
    books.enter(second)
    books.stop()
    assert books.finish(first, True) == (None, [second])
    assert books.count == 0
    assert books.abandoning(_event(2))
