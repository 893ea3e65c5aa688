"""TaskFuture: the handle `task.submit()` returns."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Generator
from typing import Any, Generic, TypeVar

from ._errors import SyncInAsyncError
from ._states import Pending, State
from ._threads import running_loop

R = TypeVar("R")


class TaskFuture(Generic[R]):
    """A task run in progress.

    `wait()` returns its final State, `result()` its value (raising its error),
    `state` is where it is now; inside async flows, `await future` gives the value.
    Submitted from a sync flow the run is a `concurrent.futures.Future` on the
    flow's loop; submitted from an async flow it is an `asyncio.Task`.
    """

    __slots__ = ("_future", "_loop", "task_name", "task_run_id")

    def __init__(
        self,
        future: asyncio.Future[State] | concurrent.futures.Future[State],
        loop: asyncio.AbstractEventLoop,
        task_run_id: str,
        task_name: str,
    ) -> None:
        self._future = future
        self._loop = loop
        self.task_run_id = task_run_id
        self.task_name = task_name

    @property
    def state(self) -> State:
        if self._future.done() and not self._future.cancelled():
            return self._future.result()
        return Pending()

    def done(self) -> bool:
        return self._future.done()

    def wait(self, timeout: float | None = None) -> State:
        """Block until the task run is final (or `timeout` passes) and return its state."""
        if isinstance(self._future, concurrent.futures.Future):
            concurrent.futures.wait([self._future], timeout)
            return self.state
        if running_loop() is self._loop:
            raise SyncInAsyncError(
                "future.wait() would block the event loop this task runs on; "
                "in an async flow use `await future` or `await future.wait_async()`"
            )
        waiter = asyncio.run_coroutine_threadsafe(_wait_task(self._future, timeout), self._loop)
        return waiter.result()

    async def wait_async(self, timeout: float | None = None) -> State:
        """`wait()` for async code."""
        if isinstance(self._future, concurrent.futures.Future):
            wrapped = asyncio.wrap_future(self._future)
            await asyncio.wait([wrapped], timeout=timeout)
            return self.state
        await asyncio.wait([self._future], timeout=timeout)
        return self.state

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The task's return value; its exception is raised if it failed."""
        result: R = self.wait(timeout).result(raise_on_failure=raise_on_failure)
        return result

    def __await__(self) -> Generator[Any, None, R]:
        state = yield from self.wait_async().__await__()
        result: R = state.result()
        return result

    def __repr__(self) -> str:
        return f"TaskFuture({self.task_name}, {self.task_run_id[-8:]}, {self.state!r})"


async def _wait_task(future: asyncio.Future[State], timeout: float | None) -> State:
    await asyncio.wait([future], timeout=timeout)
    if future.done() and not future.cancelled():
        return future.result()
    return Pending()
