"""What runs beside each subscription: its source, supervised, and its commit rounds."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

import anyio

from .._errors import EventflowError, FencedError
from .._retries import Backoff
from ._runner import SubscriptionRunner
from ._subscription import SOURCE_CALL_TIMEOUT

logger = logging.getLogger("eventflow.runtime")


class SourceEndedError(EventflowError):
    """A source's `run()` returned while the worker was not shutting down."""


async def supervise_source(runner: SubscriptionRunner, shutting_down: Callable[[], bool]) -> None:
    """Run a source until shutdown; whatever else ends it is logged and restarted.

    Only the app's own shutdown ends a source: `runner.stopping` says so, or
    the cancellation of the task group it runs in (its cancel scope's deadline
    is then -inf). A CancelledError that a
    library raises while nobody cancelled us, an exception, or a source that
    simply returns is a failure: logged at ERROR (with a traceback unless it is
    an eventflow error, whose message says it all; the same failure again only
    counts in the source's outage summary) and restarted with backoff.
    """
    name = runner.subscription.name
    backoff = Backoff(initial=0.5, maximum=10.0, jitter=0.2)
    failures = 0
    previous = ""
    while not runner.stopping:
        started = time.monotonic()
        runner.health.source_started()
        try:
            await runner.source.run(runner)
            if runner.stopping:
                return
            if runner.source.finite:
                logger.info("%s: the source delivered everything it has", name)
                runner.health.shut_down()
                return
            error: BaseException = SourceEndedError(f"{name}: the source's run() returned")
        except FencedError as fenced:  # a claim was lost: a new consumer claims anew
            logger.info("%s: restarting the source to rejoin (%s)", name, fenced)
            await runner.fences.lease.valid.wait()  # a lost lease is claimed again first
            runner.rejoined()
            continue
        except asyncio.CancelledError as cancelled:
            if runner.stopping or shutting_down() or _scope_cancelled():
                raise
            error = cancelled
        except Exception as failure:
            error = failure
        runner.health.source_failed()
        if time.monotonic() - started > 60:
            failures, previous = 0, ""  # it ran a good while: a new failure
        failures += 1
        delay = backoff.delay(failures)
        if isinstance(error, asyncio.CancelledError):
            described = "a CancelledError not from shutdown"
        else:
            described = f"{type(error).__name__}: {error}"
        runner.source.record_error(described)
        if described != previous:
            # eventflow's own errors (a connector translated its library's) say it
            # all; anything else gets its traceback
            logger.error(
                "%s: source ended (%s); restarting in %.1fs",
                name,
                described,
                delay,
                exc_info=None if isinstance(error, EventflowError) else error,
            )
        # the same failure again only counts in the source's outage summary
        previous = described
        await asyncio.sleep(delay)


def _scope_cancelled() -> bool:
    """Whether the cancel scope this task runs in (or one around it) was cancelled."""
    return anyio.current_effective_deadline() == -math.inf


async def commit_loop(runner: SubscriptionRunner, interval: float) -> None:
    """Store offsets and commit them to the source, every `commit_interval`.

    Each round is bounded: while the store is away a round gives up after
    60 s (the offsets wait in the writer's queue) and the next one tries again.
    (Longer than the source's own commit bound, SOURCE_CALL_TIMEOUT, so a broker
    that hangs is seen and logged there, not cut off silently here.)
    """
    while True:
        await asyncio.sleep(interval)
        # the store away: the round gives up (the writer logs it), the next one retries
        with anyio.move_on_after(2 * SOURCE_CALL_TIMEOUT):
            try:
                await runner.commit()
            except Exception:
                logger.exception("%s: commit failed", runner.subscription.name)
