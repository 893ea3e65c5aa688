"""TestApp: an App served with its sources in memory and a temporary store."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio.from_thread
import orjson
import pydantic
import sqlalchemy as sa
from anyio.from_thread import BlockingPortal
from pydantic_core import to_jsonable_python

from .._flows import Flow
from .._runtime._app import App
from .._runtime._source import Source
from .._runtime._subscription import Subscription
from .._settings import Settings, normalize_database_url
from .._store import _schema as schema
from .._store._reader import RunFilter, RunReader
from . import _memory
from ._blocking import BlockingTestApp
from ._memory import DeadLetter, EventNotRunError
from ._spans import SpanCollector
from ._stored_runs import FlowRun

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan

Value = Mapping[str, Any] | Sequence[Any] | pydantic.BaseModel | bytes | str | int | float | bool
"""What `publish` takes: JSON-able data or a pydantic model (encoded as JSON), or raw bytes/text."""

Headers = Sequence[tuple[str, bytes]] | Mapping[str, bytes | str]


@dataclass(frozen=True, slots=True)
class _Feed:
    """A subscription of the app under test: its memory source and dead-letter sink."""

    original: Subscription
    source: _memory.MemorySource
    dead_letters: _memory.MemorySink | None


class TestApp:
    """Serves `app` with every subscription's source in memory and a temporary store.

    `database_url` picks the store instead (e.g. a PostgreSQL test database);
    by default it is a fresh SQLite file, deleted on exit. `timeout` bounds
    how long `publish` waits for a run to end (None: no bound), and the
    shutdown grace on exit. The app's settings apply, except that no metrics
    port is opened and the store is written from a thread rather than a child
    process (it starts faster). Each subscription reads from one partition in
    memory, named after the original source.

    With `trace=True` (needs `eventflow[otel]`), eventflow's spans go to an
    in-memory exporter while it runs: `spans()` returns them.
    """

    __test__ = False  # a harness, not a test class, for pytest

    def __init__(
        self,
        app: App,
        *,
        database_url: str | None = None,
        timeout: float | None = 60.0,
        trace: bool = False,
    ) -> None:
        self.app = app
        self._spans = SpanCollector() if trace else None
        self.database_url = database_url
        self.timeout = timeout
        self._feeds: list[_Feed] = []
        self._served: App | None = None
        self._serving: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None
        self._reader: RunReader | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._portal: tuple[AbstractContextManager[BlockingPortal], BlockingPortal] | None = None

    # -- async form ---------------------------------------------------------------

    async def __aenter__(self) -> TestApp:
        if self._serving is not None:
            raise RuntimeError("this TestApp is already running")
        url = self.database_url
        if url is None:
            self._directory = tempfile.TemporaryDirectory(prefix="eventflow-test-")
            url = f"sqlite:///{self._directory.name}/runs.db"
        base = self.app.settings or Settings.from_env()
        settings = replace(
            base,
            database_url=normalize_database_url(url),
            metrics_port=0,
            writer_process=False,
            shutdown_grace=min(base.shutdown_grace, self.timeout or base.shutdown_grace),
        )
        served = App(settings)
        if self._spans is not None:
            self._spans.start()
        self._feeds = [self._feed(sub) for sub in self.app.subscriptions]
        for feed in self._feeds:
            served.subscriptions.append(
                replace(feed.original, source=feed.source, dead_letter=feed.dead_letters)
            )
        self._served = served
        self._stop = asyncio.Event()
        self._serving = asyncio.create_task(served.serve(self._stop))
        started = asyncio.create_task(served.started.wait())
        await asyncio.wait({self._serving, started}, return_when=asyncio.FIRST_COMPLETED)
        if not started.done():  # serve() failed to start
            started.cancel()
            try:
                await self._serving
            finally:
                self._cleanup()
            raise RuntimeError("the app stopped while starting")
        self._reader = RunReader(settings.database_url)
        return self

    @property
    def worker(self) -> App:
        """The app being served (the copy with sources in memory); `.runners` hold its counters."""
        if self._served is None:
            raise RuntimeError("use the TestApp inside `async with TestApp(app) as test:`")
        return self._served

    @property
    def store_directory(self) -> Path | None:
        """The temporary directory of the store while it runs (None with a `database_url`)."""
        return None if self._directory is None else Path(self._directory.name)

    @staticmethod
    def _feed(subscription: Subscription) -> _Feed:
        original = subscription.source
        # dead letters only where production sends them (a sink named, or the source's own)
        has_sink = subscription.dead_letter is not None or original.dead_letter_sink() is not None
        source = _memory.MemorySource(
            original.name, group_id=original.group_id, key_ordering=subscription.key_ordering
        )
        source.messaging_system = original.messaging_system  # its runs' spans say "kafka"
        return _Feed(subscription, source, _memory.MemorySink() if has_sink else None)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the app as a worker stops: runs in flight finish (within the shutdown grace)."""
        if self._serving is None or self._stop is None:
            return
        for feed in self._feeds:
            feed.source.stop_taking()
        self._stop.set()
        try:
            await self._serving
        finally:
            for feed in self._feeds:
                feed.source.abandon()
            if self._reader is not None:
                await self._reader.close()
            self._cleanup()

    def _cleanup(self) -> None:
        if self._spans is not None:
            self._spans.stop()
        self._serving = self._stop = self._served = self._reader = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None

    async def publish(
        self,
        source: Source,
        value: Value,
        *,
        key: str | bytes | None = None,
        headers: Headers = (),
        flow: Flow[Any, Any] | None = None,
        timeout: float | None = None,
    ) -> FlowRun:
        """Send an event to `source`'s subscriptions and return its run once it has ended.

        It has ended once its failure policy applied too (a dead letter is
        sent by then). `value`: a dict (or anything JSON-able) or a pydantic
        model is encoded as JSON; bytes and str are sent as they are. If the
        source feeds several flows, `flow` says whose run to return.
        """
        return await self.send(source, value, key=key, headers=headers, flow=flow, timeout=timeout)

    def send(
        self,
        source: Source,
        value: Value,
        *,
        key: str | bytes | None = None,
        headers: Headers = (),
        flow: Flow[Any, Any] | None = None,
        timeout: float | None = None,
    ) -> PendingRun:
        """`publish` without waiting: the event is queued now; await what it returns for its run.

        Events sent one after another arrive in that order, as on a partition.
        """
        feeds = self._feeds_of(source)
        chosen = self._choose(source, feeds, flow)
        payload = _encode(value)
        text_key = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        header_list = _headers(headers)
        waits = {
            id(feed): feed.source.append(payload, key=text_key, headers=header_list)
            for feed in feeds
        }
        event, outcome = waits[id(chosen)]
        wait = self.timeout if timeout is None else timeout
        return PendingRun(self, chosen, event.id, outcome, wait)

    async def _run_of(
        self,
        feed: _Feed,
        event_id: str,
        outcome: asyncio.Future[str | None],
        timeout: float | None,
    ) -> FlowRun:
        try:
            async with asyncio.timeout(timeout):
                never_ran = await asyncio.shield(outcome)  # a timeout leaves it to others
        except TimeoutError:
            raise TimeoutError(
                f"{feed.source.name}: the run of event {event_id} did not end within"
                f" {timeout:g}s (a longer `timeout=` waits more)"
            ) from None
        if never_ran is not None:
            raise EventNotRunError(never_ran)
        await self._flush()
        runs = schema.flow_runs
        query = (
            sa.select(runs.c.id)
            .where(
                runs.c.event_id == event_id,
                runs.c.flow_name == feed.original.flow.name,
                runs.c.parent_flow_run_id.is_(None),
            )
            .order_by(runs.c.created_at.desc())
            .limit(1)
        )
        async with self._store.engine.connect() as conn:
            run_id = (await conn.execute(query)).scalar()
        if run_id is None:
            raise EventNotRunError(f"{feed.source.name}: event {event_id} ended without a run")
        return await self.run(str(run_id))

    async def run(self, run_id: str) -> FlowRun:
        """A run by id (e.g. a `linked_run_id`), with its task runs and logs."""
        await self._flush()
        return FlowRun.from_row(await self._store.get_flow_run(run_id))

    async def runs(self, flow: Flow[Any, Any] | None = None) -> list[FlowRun]:
        """Every flow run in the store (of `flow`), oldest first, with task runs and logs."""
        await self._flush()
        matching = RunFilter(flow=None if flow is None else flow.name)
        listed = await self._store.list_flow_runs(matching, limit=1_000_000)
        return [FlowRun.from_row(await self._store.get_flow_run(r["id"])) for r in reversed(listed)]

    def spans(self, run: FlowRun | str | None = None) -> list[ReadableSpan]:
        """The spans eventflow ended so far (`TestApp(app, trace=True)`): all of them,
        or a flow run's own and those under it (its task runs, published messages)."""
        if self._spans is None:
            raise RuntimeError("spans are collected with TestApp(app, trace=True)")
        return self._spans.spans(run.id if isinstance(run, FlowRun) else run)

    def dead_letters(self, source: Source, flow: Flow[Any, Any] | None = None) -> list[DeadLetter]:
        """What the failure policy sent to the dead-letter sink for `source` (of `flow`)."""
        return [
            message
            for feed in self._feeds_of(source)
            if feed.dead_letters is not None and (flow is None or feed.original.flow is flow)
            for message in feed.dead_letters.messages
        ]

    @property
    def _store(self) -> RunReader:
        if self._reader is None:
            raise RuntimeError("use the TestApp inside `async with TestApp(app) as test:`")
        return self._reader

    async def _flush(self) -> None:
        for runner in self.worker.runners:
            await runner.writer.flush()
            return  # one writer serves them all

    def _feeds_of(self, source: Source) -> list[_Feed]:
        if self._serving is None:
            raise RuntimeError("use the TestApp inside `async with TestApp(app) as test:`")
        feeds = [feed for feed in self._feeds if feed.original.source is source]
        if not feeds:
            subscribed = ", ".join(sorted({f.original.source.name for f in self._feeds})) or "none"
            raise ValueError(
                f"{source.name} is not subscribed in this app (its sources: {subscribed})"
            )
        return feeds

    @staticmethod
    def _choose(source: Source, feeds: list[_Feed], flow: Flow[Any, Any] | None) -> _Feed:
        if flow is not None:
            for feed in feeds:
                if feed.original.flow is flow:
                    return feed
            raise ValueError(f"{source.name} does not feed flow {flow.name!r}")
        if len(feeds) > 1:
            names = ", ".join(feed.original.flow.name for feed in feeds)
            raise ValueError(
                f"{source.name} feeds several flows ({names}): say whose run to return with flow="
            )
        return feeds[0]

    # -- sync form ----------------------------------------------------------------

    def __enter__(self) -> BlockingTestApp:
        portal_context = anyio.from_thread.start_blocking_portal("asyncio")
        portal = portal_context.__enter__()
        try:
            portal.call(self.__aenter__)
        except BaseException as error:
            portal_context.__exit__(type(error), error, error.__traceback__)
            raise
        self._portal = (portal_context, portal)
        return BlockingTestApp(self, portal)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._portal is None:
            return
        (portal_context, portal), self._portal = self._portal, None
        try:
            portal.call(self.__aexit__, exc_type, exc, traceback)
        finally:
            portal_context.__exit__(None, None, None)


class PendingRun:
    """An event `send` queued: `await` it for its run (nothing is read until then)."""

    __slots__ = ("_feed", "_outcome", "_test", "_timeout", "event_id")

    def __init__(
        self,
        test: TestApp,
        feed: _Feed,
        event_id: str,
        outcome: asyncio.Future[str | None],
        timeout: float | None,
    ) -> None:
        self._test = test
        self._feed = feed
        self.event_id = event_id
        self._outcome = outcome
        self._timeout = timeout

    def done(self) -> bool:
        """True once the runtime is done with the event (its run has ended)."""
        return self._outcome.done()

    def __await__(self) -> Generator[Any, None, FlowRun]:
        run_of = self._test._run_of(self._feed, self.event_id, self._outcome, self._timeout)
        return run_of.__await__()


def _encode(value: Value) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, pydantic.BaseModel):
        return value.model_dump_json().encode()
    return orjson.dumps(value, default=to_jsonable_python)


def _headers(headers: Headers) -> tuple[tuple[str, bytes], ...]:
    items: Iterator[tuple[str, bytes | str]] = iter(
        headers.items() if isinstance(headers, Mapping) else headers
    )
    return tuple(
        (name, value.encode() if isinstance(value, str) else value) for name, value in items
    )
