"""The harness for sync code: the same calls, through anyio's blocking portal."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from anyio.from_thread import BlockingPortal

from .._flows import Flow
from .._runtime._source import Source
from ._memory import DeadLetter
from ._stored_runs import FlowRun

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

    from ._app import Headers, PendingRun, TestApp, Value


class BlockingPendingRun:
    """An event `send` queued, in sync code: `.result()` waits for its run."""

    __slots__ = ("_pending", "_portal")

    def __init__(self, pending: PendingRun, portal: BlockingPortal) -> None:
        self._pending = pending
        self._portal = portal

    @property
    def event_id(self) -> str:
        return self._pending.event_id

    def result(self) -> FlowRun:
        return self._portal.call(_wait, self._pending)


class BlockingTestApp:
    """`TestApp` for sync code (`with TestApp(app) as test:`): the same calls, blocking.

    The app runs on an event loop in a thread of its own (anyio's blocking portal).
    """

    __test__ = False

    def __init__(self, test: TestApp, portal: BlockingPortal) -> None:
        self._test = test
        self._portal = portal

    def publish(
        self,
        source: Source,
        value: Value,
        *,
        key: str | bytes | None = None,
        headers: Headers = (),
        flow: Flow[Any, Any] | None = None,
        timeout: float | None = None,
    ) -> FlowRun:
        """See `TestApp.publish`."""
        return self.send(
            source, value, key=key, headers=headers, flow=flow, timeout=timeout
        ).result()

    def send(
        self,
        source: Source,
        value: Value,
        *,
        key: str | bytes | None = None,
        headers: Headers = (),
        flow: Flow[Any, Any] | None = None,
        timeout: float | None = None,
    ) -> BlockingPendingRun:
        """See `TestApp.send`: the event is queued when this returns; `.result()` is its run."""
        send = functools.partial(
            self._test.send, source, value, key=key, headers=headers, flow=flow, timeout=timeout
        )
        return BlockingPendingRun(self._portal.call(_call, send), self._portal)

    def run(self, run_id: str) -> FlowRun:
        """See `TestApp.run`."""
        return self._portal.call(self._test.run, run_id)

    def runs(self, flow: Flow[Any, Any] | None = None) -> list[FlowRun]:
        """See `TestApp.runs`."""
        return self._portal.call(self._test.runs, flow)

    def dead_letters(self, source: Source, flow: Flow[Any, Any] | None = None) -> list[DeadLetter]:
        """See `TestApp.dead_letters`."""
        return self._test.dead_letters(source, flow)

    def spans(self, run: FlowRun | str | None = None) -> list[ReadableSpan]:
        """See `TestApp.spans`."""
        return self._test.spans(run)


async def _call(function: functools.partial[Any]) -> Any:
    """Call `function` on the portal's loop (what it touches belongs to that loop)."""
    return function()


async def _wait(pending: PendingRun) -> FlowRun:
    return await pending
