"""What the polling sources share: the poll loop, backoff, error records, bounded fetching.

A polling source asks an HTTP endpoint for data on an interval and turns each
answer into events. Failures are normal (5xx, 429, timeouts, refused
connections, bad bodies): each one is recorded in `PollStats`, the loop backs
off exponentially with jitter (never less than a server's `Retry-After`) and
keeps polling. A subclass implements `poll` (fetch and translate, changing no
state) and `delivered` (commit the state the poll computed, e.g. a cursor, once
the runtime took the events), so a failed poll or a failed delivery never
advances nor resets anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from eventflow import ConfigurationError, EventflowError
from eventflow.runtime import (
    TRACING,
    Backoff,
    Event,
    EventSink,
    Source,
    missing_extra,
    parse_retry_after,
)

try:
    import httpx
except ImportError as error:  # without the `http` extra
    raise missing_extra("httpx", "http", "HttpPollSource and PrometheusScrapeSource") from error

logger = logging.getLogger("eventflow.polling")

_IDLE_RECHECK = 0.05
"""Seconds between checks of `sink.accepting()` while the runtime is at its bound."""
_SLEEP_SLICE = 0.1
"""Longest uninterrupted sleep, so a stopping worker is noticed promptly."""


class PollError(EventflowError):
    """A poll failed; the source records it, backs off and polls again."""

    retry_after: float | None = None


class PollRequestError(PollError):
    """The request did not get a response: timeout, refused connection, broken transfer."""


class PollStatusError(PollError):
    """The server answered with an error status (or one the source cannot use)."""

    def __init__(self, status: int, retry_after: float | None = None) -> None:
        super().__init__(
            f"HTTP {status}" + (f" (Retry-After {retry_after:g}s)" if retry_after else "")
        )
        self.status = status
        self.retry_after = retry_after


class PollBodyTooLargeError(PollError):
    """The response body is larger than `max_body_bytes`; reading stopped there."""


class PollBodyError(PollError):
    """The response body cannot be used: invalid JSON or exposition text, a missing path."""


@dataclass(slots=True)
class PollStats:
    """What a status line or a metrics exporter reads from a polling source."""

    polls: int = 0
    successes: int = 0
    errors: int = 0
    consecutive_errors: int = 0
    not_modified: int = 0
    events: int = 0
    duplicates: int = 0
    acked: int = 0
    last_status: int | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    errors_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Fetched:
    """A response read whole (within the size limit)."""

    status: int
    headers: httpx.Headers
    body: bytes


async def fetch(
    client: httpx.AsyncClient,
    request: httpx.Request,
    *,
    max_body_bytes: int,
    timeout: float,
    auth: httpx.Auth | tuple[str, str] | None = None,
    ok: Sequence[int] = (),
) -> Fetched:
    """Send `request` and read the body within `timeout` seconds, stopping past `max_body_bytes`.

    A 2xx status, or one in `ok` (e.g. 304), is returned; anything else raises
    `PollStatusError`. httpx's errors become `PollRequestError`.
    """
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(client, request, max_body_bytes, auth, ok)
    except TimeoutError as error:
        raise PollRequestError(f"no complete response within {timeout:g}s") from error


async def _fetch(
    client: httpx.AsyncClient,
    request: httpx.Request,
    max_body_bytes: int,
    auth: httpx.Auth | tuple[str, str] | None,
    ok: Sequence[int],
) -> Fetched:
    try:
        if auth is None:
            response = await client.send(request, stream=True)
        else:
            response = await client.send(request, stream=True, auth=auth)
    except httpx.TimeoutException as error:
        raise PollRequestError(f"timed out: {type(error).__name__}") from error
    except httpx.HTTPError as error:
        raise PollRequestError(f"{type(error).__name__}: {error}") from error
    try:
        status = response.status_code
        if not (200 <= status < 300 or status in ok):
            raise PollStatusError(status, parse_retry_after(response.headers.get("retry-after")))
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
            raise PollBodyTooLargeError(
                f"Content-Length {declared} is over max_body_bytes={max_body_bytes}"
            )
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > max_body_bytes:
                    raise PollBodyTooLargeError(
                        f"body is over max_body_bytes={max_body_bytes}; stopped reading"
                    )
                chunks.append(chunk)
        except httpx.TimeoutException as error:
            raise PollRequestError(f"timed out reading the body: {type(error).__name__}") from error
        except httpx.HTTPError as error:
            raise PollRequestError(f"{type(error).__name__}: {error}") from error
        return Fetched(status, response.headers, b"".join(chunks))
    finally:
        await response.aclose()


class PollingSource(Source):
    """A source that polls an HTTP endpoint on an interval; see the module docstring.

    Its events are unpartitioned: the runtime deduplicates them against the
    store by `Event.id` and acknowledges them with `ack` once their runs are
    durable. `client` may be injected (it is then not closed here); otherwise
    one is created when `run` starts and closed when it returns.
    """

    def __init__(
        self,
        *,
        name: str,
        interval: float,
        jitter: float,
        backoff: Backoff | None,
        timeout: float,
        client: httpx.AsyncClient | None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | tuple[str, str] | None = None,
    ) -> None:
        if interval <= 0:
            raise ConfigurationError("interval must be > 0")
        if not 0 <= jitter < 1:
            raise ConfigurationError("jitter must be within [0, 1)")
        if timeout <= 0:
            raise ConfigurationError("timeout must be > 0")
        self.name = name
        self.interval = interval
        self.jitter = jitter
        self.backoff = backoff or Backoff(initial=min(interval, 1.0), maximum=max(interval, 60.0))
        self.timeout = timeout
        self.stats = PollStats()
        self.headers = dict(headers or {})
        self.auth = auth
        self._client = client

    async def fetch(
        self,
        client: httpx.AsyncClient,
        url: str,
        *,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
        max_body_bytes: int,
        ok: Sequence[int] = (),
    ) -> Fetched:
        """One request with the source's headers, auth and timeout (see `fetch`)."""
        request = client.build_request(
            method,
            url,
            # the current trace context, if any (the user's: polls run outside runs)
            headers={**self.headers, **TRACING.current_headers(), **(headers or {})},
            content=content,
            timeout=None,  # one deadline for the whole exchange, in `fetch`
        )
        return await fetch(
            client,
            request,
            max_body_bytes=max_body_bytes,
            timeout=self.timeout,
            auth=self.auth,
            ok=ok,
        )

    # -- what a subclass implements ------------------------------------------------------

    @abstractmethod
    async def poll(self, client: httpx.AsyncClient) -> Sequence[Event]:
        """Fetch once and translate the answer into events, without changing any state.

        Raise a `PollError` when the answer cannot be used.
        """

    def delivered(self, events: Sequence[Event]) -> None:
        """The runtime took the events of the last `poll`: commit what it computed."""

    async def resume(self, sink: EventSink) -> None:
        """Before the first poll: restore what a previous worker saved for this source."""

    # -- the loop --------------------------------------------------------------------

    async def run(self, sink: EventSink) -> None:
        await self.resume(sink)
        async with self._client_for_run() as client:
            while not sink.stopping:
                if not sink.accepting():
                    await self._sleep(sink, _IDLE_RECHECK)
                    continue
                delay = await self.poll_and_deliver(client, sink)
                await self._sleep(sink, delay)

    async def poll_and_deliver(self, client: httpx.AsyncClient, sink: EventSink) -> float:
        """One poll; the seconds to wait before the next."""
        self.stats.polls += 1
        try:
            events = await self.poll(client)
            if events:
                await sink.deliver(events)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a failed poll or a store that cannot take events
            return self._failed(error)
        self.delivered(events)
        self.record_ok()
        self.stats.events += len(events)
        self.stats.successes += 1
        self.stats.consecutive_errors = 0
        self.stats.last_success_at = time.time()
        return self.interval * (1 + self.jitter * (2 * random.random() - 1))

    def _failed(self, error: Exception) -> float:
        stats = self.stats
        stats.errors += 1
        stats.consecutive_errors += 1
        kind = type(error).__name__
        stats.errors_by_kind[kind] = stats.errors_by_kind.get(kind, 0) + 1
        self.record_error(error)  # the source-level count a metrics exporter reads
        stats.last_error = self.last_error
        stats.last_error_at = self.last_error_at
        if isinstance(error, PollStatusError):
            stats.last_status = error.status
        delay = self.backoff.delay(stats.consecutive_errors)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            delay = max(delay, retry_after)
        # an expected failure (HTTP error, timeout, bad body) is logged by the source's
        # outage (record_error: once, then a summary every 30 s); anything else is a bug
        expected = isinstance(error, PollError)
        logger.log(
            logging.DEBUG if expected else logging.ERROR,
            "%s: poll failed (%d in a row), next in %.2fs: %s",
            self.name,
            stats.consecutive_errors,
            delay,
            stats.last_error,
            exc_info=not expected,
        )
        return delay

    async def ack(self, events: Sequence[Event]) -> None:
        self.stats.acked += len(events)

    @contextlib.asynccontextmanager
    async def _client_for_run(self) -> AsyncIterator[httpx.AsyncClient]:
        if self._client is not None:
            yield self._client
            return
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as client:
            yield client

    @staticmethod
    async def _sleep(sink: EventSink, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not sink.stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, _SLEEP_SLICE))


def url_for_names(url: str) -> str:
    """`url` without query string and credentials (they may hold API keys), for source
    names, which end up in event ids, logs and metric labels."""
    return str(httpx.URL(url).copy_with(query=None, userinfo=b""))
