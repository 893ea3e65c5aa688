"""Backfills: a flow over a finite source, every event one tracked run, resumable.

A backfill is the streaming runtime with one subscription whose source returns
from `run` when its input is exhausted: once every delivered event's run has
finished, the App shuts down gracefully and the source's offsets are stored
with the runs. Run it again with the same source and it resumes after the
stored offset; events whose runs already ended are never run again. Failed
runs (bad JSON, invalid parameters, a raising flow) are counted and reported,
and optionally appended to a dead-letter JSONL file; they never stop it.

A source may expose `total` (events in its whole input) and `already_done`
(events before its stored offset) once `run` has started, for the progress bar.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from ._errors import EventflowError
from ._extras import require
from ._flows import Flow
from ._runtime._app import App
from ._runtime._source import Event, EventSink, Partition, Sink, Source
from ._runtime._subscription import ParamsOverride
from ._settings import Settings

if TYPE_CHECKING:
    from tqdm import tqdm

_FAILURES_KEPT = 1000

logger = logging.getLogger("eventflow.backfill")


class BackfillError(EventflowError):
    """The backfill's source failed; what ran is stored, and running it again resumes."""


@dataclass(frozen=True, slots=True)
class BackfillFailure:
    """An event whose run FAILED (or was dead-lettered again after a resume)."""

    event_id: str
    offset: int | None
    run_id: str | None
    error: str


@dataclass(frozen=True, slots=True)
class BackfillProgress:
    """Where a backfill is: `done` of `total` events (None until the source knows)."""

    total: int | None
    done: int
    completed: int
    failed: int
    elapsed: float


@dataclass(frozen=True, slots=True)
class BackfillResult:
    """What a backfill did.

    `already_done` events were finished by an earlier, interrupted pass;
    `skipped_duplicates` were delivered again but had a final run already.
    """

    flow_name: str
    group_id: str
    total: int | None
    already_done: int
    completed: int
    failed: int
    skipped_duplicates: int
    interrupted: bool
    seconds: float
    failures: tuple[BackfillFailure, ...]

    @property
    def done(self) -> int:
        """Events with a final run, over all passes."""
        return self.already_done + self.completed + self.failed + self.skipped_duplicates

    def summary(self, failures_shown: int = 20) -> str:
        """A few lines for a terminal: counts, rate, the first failures, how to resume."""
        ran = self.completed + self.failed
        rate = ran / self.seconds if self.seconds > 0 else 0.0
        total = "?" if self.total is None else str(self.total)
        lines = [
            f"backfill {self.flow_name}: {self.done}/{total} done; this pass ran {ran} "
            f"({self.completed} completed, {self.failed} failed) in {self.seconds:.1f}s "
            f"({rate:.0f} runs/s); {self.already_done + self.skipped_duplicates} had run before"
        ]
        for failure in self.failures[:failures_shown]:
            lines.append(f"  FAILED {failure.event_id} (run {failure.run_id}): {failure.error}")
        hidden = max(self.failed, len(self.failures)) - min(failures_shown, len(self.failures))
        if hidden > 0:
            lines.append(
                f"  ... and {hidden} more failed runs (eventflow runs list --state FAILED)"
            )
        if self.interrupted:
            lines.append(f"interrupted: run it again to resume (progress in group {self.group_id})")
        return "\n".join(lines)


ProgressCallback = Callable[[BackfillProgress], None]


async def backfill_async(
    flow: Flow[Any, Any],
    source: Source,
    *,
    settings: Settings | None = None,
    max_in_flight: int = 64,
    params: ParamsOverride | None = None,
    dead_letter_path: str | Path | None = None,
    progress: bool | ProgressCallback = False,
    stop: asyncio.Event | None = None,
) -> BackfillResult:
    """Run `flow` once per event of the finite `source`; returns when it is exhausted.

    The source's `group_id` (default `backfill:<flow>:<source name>`) keys its
    stored offsets: the same backfill again resumes where this one stopped.
    Setting `stop` interrupts it gracefully (runs in flight finish, offsets are
    stored). `progress=True` draws a progress bar on stderr; a callable gets a
    `BackfillProgress` about ten times a second.
    """
    if source.group_id is None:
        source.group_id = f"backfill:{flow.name}:{source.name}"
    settings = settings or Settings.from_env()
    if not flow.is_async and max_in_flight > settings.max_threads // 2:
        # a sync flow holds a worker thread while its tasks wait for one: with as many
        # flows in flight as threads, none of their tasks can start
        logger.warning(
            "%s is a sync flow: at most %d runs in flight (EVENTFLOW_MAX_THREADS / 2)",
            flow.name,
            settings.max_threads // 2,
        )
        max_in_flight = max(1, settings.max_threads // 2)
    bounded = _UntilExhausted(source)
    failures = _FailureLog(Path(dead_letter_path) if dead_letter_path is not None else None)
    app = App(settings)
    app.subscribe(
        bounded,
        flow,
        on_failure="dead_letter",
        dead_letter=failures,
        max_in_flight=max_in_flight,
        max_in_flight_per_partition=max_in_flight,
        params=params,
    )
    report: ProgressCallback | None = _ProgressBar(flow.name) if progress is True else None
    if callable(progress):
        report = progress
    app_stop = asyncio.Event()
    serving = asyncio.create_task(app.serve(app_stop))
    began = time.monotonic()
    interrupted = False
    try:
        started = asyncio.create_task(app.started.wait())
        await asyncio.wait([started, serving], return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        while app.started.is_set() and not serving.done():
            runner = app.runners[0]
            if report is not None:
                stats = runner.stats
                report(
                    BackfillProgress(
                        total=getattr(source, "total", None),
                        done=getattr(source, "already_done", 0)
                        + stats.completed
                        + stats.failed
                        + stats.skipped_duplicates,
                        completed=stats.completed,
                        failed=stats.failed,
                        elapsed=time.monotonic() - began,
                    )
                )
            if (bounded.exhausted or bounded.error is not None) and runner.in_flight == 0:
                break
            if stop is not None and stop.is_set():
                interrupted = True
                break
            await asyncio.sleep(0.1)
    finally:
        app_stop.set()
        try:
            await serving
        finally:
            if isinstance(report, _ProgressBar):
                report.close()
    if bounded.error is not None:
        raise BackfillError(
            f"the source {source.name} failed: {type(bounded.error).__name__}: {bounded.error}"
        ) from bounded.error
    stats = app.runners[0].stats
    return BackfillResult(
        flow_name=flow.name,
        group_id=source.group_id,
        total=getattr(source, "total", None),
        already_done=getattr(source, "already_done", 0),
        completed=stats.completed,
        failed=stats.failed,
        skipped_duplicates=stats.skipped_duplicates,
        interrupted=interrupted or not bounded.exhausted,
        seconds=time.monotonic() - began,
        failures=tuple(failures.failures),
    )


def backfill(
    flow: Flow[Any, Any],
    source: Source,
    *,
    settings: Settings | None = None,
    max_in_flight: int = 64,
    params: ParamsOverride | None = None,
    dead_letter_path: str | Path | None = None,
    progress: bool | ProgressCallback = False,
) -> BackfillResult:
    """`backfill_async` from sync code; SIGINT or SIGTERM stops it gracefully (resumable)."""

    async def main() -> BackfillResult:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = threading.current_thread() is threading.main_thread()
        if handled:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        try:
            return await backfill_async(
                flow,
                source,
                settings=settings,
                max_in_flight=max_in_flight,
                params=params,
                dead_letter_path=dead_letter_path,
                progress=progress,
                stop=stop,
            )
        finally:
            if handled:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)

    return asyncio.run(main())


class _UntilExhausted(Source):
    """Wraps a finite source: notes when its `run` returned, and stops at its first error.

    The App restarts a failing source forever; a backfill stops instead (its
    offsets are stored, so running it again resumes).
    """

    finite = True

    def __init__(self, source: Source) -> None:
        self.inner = source
        self.name = source.name
        self.group_id = source.group_id
        self.exhausted = False
        self.error: Exception | None = None

    async def run(self, sink: EventSink) -> None:
        try:
            await self.inner.run(sink)
            self.exhausted = not sink.stopping
        except Exception as error:
            self.error = error

    async def commit(self, offsets: Mapping[Partition, int]) -> None:
        await self.inner.commit(offsets)

    async def ack(self, events: Sequence[Event]) -> None:
        await self.inner.ack(events)

    async def close(self) -> None:
        await self.inner.close()


class _FailureLog(Sink):
    """The backfill's dead-letter sink: keeps the first failures, appends all to a file."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.failures: list[BackfillFailure] = []
        self._file: TextIO | None = None
        self._lock = asyncio.Lock()

    async def send(
        self, value: bytes, *, key: bytes | None = None, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        found = {name: raw.decode("utf-8", "replace") for name, raw in headers}
        offset = found.get("eventflow-original-offset")
        failure = BackfillFailure(
            event_id=found.get("eventflow-event-id", ""),
            offset=int(offset) if offset else None,
            run_id=found.get("eventflow-flow-run-id") or None,
            error=found.get("eventflow-error", ""),
        )
        if len(self.failures) < _FAILURES_KEPT:
            self.failures.append(failure)
        if self.path is None:
            return
        line = orjson.dumps(
            {
                "event_id": failure.event_id,
                "offset": failure.offset,
                "run_id": failure.run_id,
                "error": failure.error,
                "value": value.decode("utf-8", "replace"),
            }
        )
        async with self._lock:
            await asyncio.to_thread(self._append, line)

    def _append(self, line: bytes) -> None:
        if self._file is None:
            assert self.path is not None
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(line.decode() + "\n")
        self._file.flush()

    async def stop(self) -> None:
        file, self._file = self._file, None
        if file is not None:
            await asyncio.to_thread(file.close)


class _ProgressBar:
    """A tqdm bar on stderr: done/total, rate, failures."""

    def __init__(self, flow_name: str) -> None:
        require("tqdm", "backfill", "the backfill progress bar (without it: --no-progress)")
        self._bar: tqdm[Any] | None = None
        self._flow_name = flow_name
        self._shown = 0

    def __call__(self, progress: BackfillProgress) -> None:
        if self._bar is None:
            if progress.total is None and progress.elapsed < 1.0:
                return  # the source is probably still counting its input
            from tqdm import tqdm  # only when a bar is drawn

            self._bar = tqdm(
                total=progress.total,
                initial=progress.done,
                desc=self._flow_name,
                unit="event",
                file=sys.stderr,
                dynamic_ncols=True,
                mininterval=0.2,
            )
            self._shown = progress.done
        if progress.total is not None and self._bar.total != progress.total:
            self._bar.total = progress.total  # the source has counted its input
            self._bar.refresh()
        if progress.done > self._shown:
            self._bar.set_postfix(failed=progress.failed, refresh=False)
            self._bar.update(progress.done - self._shown)
            self._shown = progress.done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
