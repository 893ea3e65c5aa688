"""RunGroup: the task group owning a runner's runs; drain and revoke wait on its
`Runs`' events and cancel with a reason the engine reads (pure asyncio, no store)."""

from __future__ import annotations

import asyncio
import gc
import logging
import time

import pytest

from eventflow._interruption import CURRENT_RUN
from eventflow._runtime._run_group import RunGroup, Runs
from eventflow._states import FENCED_OUT, REVOKED, CancelRequest, State, interrupted
from tests._kafka import wait_until


def _leftover(group: RunGroup) -> list[asyncio.Task[object]]:
    """Tasks of the group still alive (by the name the group gives them)."""
    return [t for t in asyncio.all_tasks() if t.get_name().startswith(group.name)]


async def test_finish_returns_when_the_last_run_ends_not_at_the_deadline() -> None:
    ends = [asyncio.Event() for _ in range(3)]
    partition = Runs()

    async def run(end: asyncio.Event) -> None:
        await end.wait()

    async with RunGroup("orders->process") as group:
        for end in ends:
            group.start(run(end), (partition,))
        assert len(partition) == 3 and len(group.every) == 3
        waiting = asyncio.create_task(group.finish([partition], 60, REVOKED))
        for end in ends:
            await asyncio.sleep(0)
            assert not waiting.done()  # waits on the event, for every run
            end.set()
        started = time.monotonic()
        assert await asyncio.wait_for(waiting, 10) == 0  # none had to be cancelled
        assert time.monotonic() - started < 5
        assert len(partition) == 0 and len(group.every) == 0


async def test_runs_left_after_the_grace_are_cancelled_saying_why_and_their_state_says_it() -> None:
    states: list[State] = []
    started = asyncio.Event()
    revoked, other = Runs(), Runs()

    async def run() -> None:
        try:
            started.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError as error:
            states.append(interrupted("flow", error))  # as the engine records it
            raise

    async with RunGroup("orders->process") as group:
        group.start(run(), (revoked,))
        other_task = group.start(asyncio.Event().wait(), (other,)).task  # type: ignore[arg-type]
        await started.wait()
        assert await group.finish([revoked], 0.05, REVOKED) == 1
        assert [s.message for s in states] == [f"the flow run was interrupted: {REVOKED}"]
        assert [s.type.value for s in states] == ["CRASHED"]
        assert other_task is not None and not other_task.done()  # not of that partition
        assert await group.finish([other], 0, FENCED_OUT) == 1
    assert other_task.cancelled()


async def test_a_flow_control_cancels_a_run_on_purpose_and_it_ends_cancelled() -> None:
    states: list[State] = []
    running = asyncio.Event()

    async def run() -> None:
        try:
            running.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError as error:
            states.append(interrupted("flow", error))
            current = CURRENT_RUN.get()
            assert current is not None
            current.absorb()  # recorded: the run goes on and ends normally

    async with RunGroup("orders->process") as group:
        handle = group.start(run(), ())
        task = handle.task
        await running.wait()
        handle.cancel(CancelRequest("Superseded", "a later event took the key", "run-2"))
        assert await group.finish([group.every], 5, FENCED_OUT) == 0
    assert task is not None and not task.cancelled()
    assert task.cancelling() == 0
    assert [(s.type.value, s.name, s.message) for s in states] == [
        ("CANCELLED", "Superseded", "a later event took the key")
    ]


async def test_leaving_the_group_cancels_what_is_left_and_nothing_outlives_it() -> None:
    async with RunGroup("orders->process") as group:
        group.start(asyncio.Event().wait(), ())  # type: ignore[arg-type]
        group.start_helper(asyncio.Event().wait())  # type: ignore[arg-type]
        assert len(_leftover(group)) == 2
    assert _leftover(group) == []
    assert len(group.every) == 0 and len(group.helpers) == 0
    with pytest.raises(RuntimeError, match="only while the runner serves"):
        group.start(asyncio.sleep(0), ())


async def test_a_run_that_raises_is_logged_at_once_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken() -> None:
        raise RuntimeError("a bug in the runner")

    done = asyncio.Event()

    async def fine() -> None:
        await done.wait()

    async with RunGroup("orders->process") as group:
        other = group.start(fine(), ()).task
        group.start(broken(), ())
        await wait_until(lambda: len(group.every) == 1, timeout=10)
        assert other is not None and not other.done()
        done.set()
    failed = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.getMessage() for r in failed] == ["orders->process failed"]


async def test_an_ended_run_leaves_no_reference_cycle_for_the_gc() -> None:
    """A run's context holds its `Run`: were the `Run` to keep its task, every run
    (task, frames, rows) would wait for the cyclic GC (a cost per event)."""

    async def run() -> None:
        await asyncio.sleep(0)

    async with RunGroup("orders->process") as group:
        gc.collect()
        gc.disable()
        try:
            for _ in range(100):
                group.start(run(), ())
            await group.every.idle()
            assert gc.collect() == 0
        finally:
            gc.enable()
